"""A worker whose intake agent has records waiting and handles none of them is rescued.

Seen a few times around a worker's restart under load (docs/exactly-once.md): the
replacement joined its group, restored its tables, logged "Ready" and then handed nothing
to its agents, or left the last records of a partition unhandled, until a test gave up.
The cause inside Faust was not pinned down. Whatever it is, it shows from outside the same
way: on a partition the worker holds, Kafka has records beyond the offset the agent expects
next, the agent is not busy with one, the worker is neither rebalancing nor restoring its
tables, the agent handles no record on any of its partitions, and this lasts. So each intake
partition has a bound (RECOVERY_INPUT_STALL_S):

1. past it, the partition is sought back to the first unhandled offset (Faust fetches and
   hands the records over again; one handled already is a repeat with the same ids);
2. past it once more, the worker asks its group for a rejoin (Faust's revoke, assign, table
   recovery and seek to the committed offsets run again);
3. past it a third time, the worker exits with code 4 so its supervisor restarts it.

A rebalance, during which no partition's wait counts, has its own bound
(RECOVERY_REBALANCE_BOUND_S, RebalanceClock): past it the worker asks for a rejoin (an
error aiokafka waits for the consumer to poll is consumed first), past it again it exits 4.

Every step is logged at ERROR with the consumer's state (/debug/consumer-state), so a stall
that comes back is diagnosed from its log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)

STALL_EXIT_CODE = 4

TP = tuple[str, int]


class Rescue(Enum):
    SEEK = "seek"
    REJOIN = "rejoin"
    EXIT = "exit"


@dataclass
class StallClock:
    """Per partition: since when the agent has had records waiting without handling one.
    Pure: the caller gives the offsets, the time and whether a wait counts now."""

    bound_ms: int
    since: dict[TP, tuple[int, int]] = field(default_factory=dict)  # tp -> (next, since_ms)
    steps: dict[TP, int] = field(default_factory=dict)  # rescues taken in the current stall

    def observe(self, tp: TP, next_offset: int | None, end_offset: int | None,
                now_ms: int, counting: bool) -> Rescue | None:
        """The rescue due on this partition now, if any. `next_offset` is the offset the agent
        expects next, `end_offset` the partition's end; `counting` is False while the worker
        rebalances, restores its tables or the agent is busy with a record (a wait there is
        not a stall)."""
        waiting = (next_offset is not None and end_offset is not None
                   and end_offset > next_offset)
        last = self.since.get(tp)
        moved = last is None or last[0] != next_offset
        if not waiting or moved:
            self.steps.pop(tp, None)  # caught up or progressing: any stall is over
        if not waiting or moved or not counting:
            # The clock starts over (a wait that does not count keeps the stall's step).
            self.since[tp] = (next_offset if next_offset is not None else -1, now_ms)
            return None
        if now_ms - last[1] < self.bound_ms:
            return None
        step = self.steps.get(tp, 0)
        self.since[tp] = (next_offset, now_ms)  # the next step needs a bound of its own
        self.steps[tp] = step + 1
        return (Rescue.SEEK, Rescue.REJOIN, Rescue.EXIT)[min(step, 2)]

    def forget_except(self, held: set[TP]) -> None:
        for tp in set(self.since) - held:
            self.since.pop(tp, None)
            self.steps.pop(tp, None)


@dataclass
class StallGuard:
    """The worker side: reads the offsets, asks the clock, takes the rescue."""

    clock: StallClock
    partitions: Callable[[], set[TP]]  # the intake partitions this worker holds
    expected: Callable[[TP], int | None]  # the agent's next offset (None: none handled)
    # Blocking, asked in an executor: the group's committed offset (None: none), and the
    # partition's first and end offsets (None: not known).
    committed: Callable[[str, int], int | None]
    watermarks: Callable[[str, int], tuple[int, int] | None]
    counting: Callable[[], bool]
    # Records the agent has handled so far, over all its partitions. While it grows, a
    # partition left waiting is one the agent has not reached yet (a backlog on the others:
    # seen after a freeze, with commands waiting behind 8,000 failure events), not a stall.
    handled: Callable[[], int]
    # The last offset Faust's fetch loop handed on towards the agent on a partition (its read
    # offset; None: none). Work elsewhere excuses a wait only while the partition's records
    # may be queued behind it, that is, Faust has handed on the first waiting record: when
    # it has not, Faust dropped them on their way (a fetch across a generation change) and
    # nothing will bring them (a replacement worker handled no failure event for minutes
    # while the watchdog's commands kept the agent busy).
    forwarded: Callable[[TP], int | None]
    seek: Callable[[TP, int], Awaitable[None]]
    rejoin: Callable[[], Awaitable[None]]
    exit: Callable[[int], None]
    state: Callable[[], Any]
    now_ms: Callable[[], int]
    rescues: int = 0
    last_handled: int | None = None
    # Per partition: the offset waiting and since when, while the wait does not count.
    excused: dict[TP, tuple[int, int]] = field(default_factory=dict)

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        held = self.partitions()
        self.clock.forget_except(held)
        handled = self.handled()
        working = self.last_handled is not None and handled != self.last_handled
        self.last_handled = handled
        settled = self.counting()
        for tp in sorted(held):
            marks = await loop.run_in_executor(None, self.watermarks, *tp)
            next_offset = self.expected(tp)
            if next_offset is None:  # nothing handled yet: where the group reads from
                next_offset = await loop.run_in_executor(None, self.committed, *tp)
                if next_offset is None and marks is not None:
                    next_offset = marks[0]  # no commit: the worker reads from the earliest
            end = marks[1] if marks is not None else None
            forwarded = self.forwarded(tp)
            queued = (forwarded is not None and next_offset is not None
                      and forwarded >= next_offset)
            counting = settled and not (working and queued)
            self.report_excused(tp, next_offset, end, counting,
                                "the worker rebalances, restores its tables, is busy with a "
                                "record or waits for outputs" if not settled else
                                "the agent is handling records of other partitions and Faust "
                                f"has handed on records up to offset {forwarded}")
            rescue = self.clock.observe(tp, next_offset, end, self.now_ms(), counting)
            if rescue is None:
                continue
            self.rescues += 1
            log.error("%s[%d]: records %s-%s waited %.0fs and the agent handled none; rescue: "
                      "%s. consumer state: %s", tp[0], tp[1], next_offset,
                      (end or 0) - 1, self.clock.bound_ms / 1000, rescue.value, self.state())
            if rescue is Rescue.SEEK:
                assert next_offset is not None
                await self.seek(tp, next_offset)
            elif rescue is Rescue.REJOIN:
                await self.rejoin()
                return  # every partition is assigned anew
            else:
                self.exit(STALL_EXIT_CODE)
                return

    def report_excused(self, tp: TP, next_offset: int | None, end: int | None,
                       counting: bool, why: str) -> None:
        """Logs, once per bound, a wait that lasts a bound without counting as a stall, with
        its reason: a partition left behind shows in the log before anything else."""
        if counting or next_offset is None or end is None or end <= next_offset:
            self.excused.pop(tp, None)
            return
        now, last = self.now_ms(), self.excused.get(tp)
        if last is None or last[0] != next_offset:
            self.excused[tp] = (next_offset, now)
        elif now - last[1] >= self.clock.bound_ms:
            log.warning("%s[%d]: records %d-%d have waited %.0fs; not counted as a stall: %s",
                        tp[0], tp[1], next_offset, end - 1, (now - last[1]) / 1000, why)
            self.excused[tp] = (next_offset, now)


@dataclass
class RebalanceClock:
    """Since when the worker's group has been rebalancing (joining or waiting for its
    assignment; restoring tables does not count), and the step due. Pure: the caller says
    whether it rebalances and what time it is.

    The input stall's clock does not run while the worker rebalances, so a rebalance that
    never ends needs a bound of its own: seen when aiokafka waited for the consumer to poll
    an assignment error, which Faust never does without an assignment (app/worker/assignor.py).
    """

    bound_ms: int
    since_ms: int | None = None
    steps: int = 0

    def observe(self, rebalancing: bool, now_ms: int) -> Rescue | None:
        if not rebalancing:
            self.since_ms, self.steps = None, 0
            return None
        if self.since_ms is None:
            self.since_ms = now_ms
            return None
        if now_ms - self.since_ms < self.bound_ms:
            return None
        self.since_ms = now_ms  # the next step needs a bound of its own
        self.steps += 1
        return Rescue.REJOIN if self.steps == 1 else Rescue.EXIT


@dataclass
class RebalanceGuard:
    """The worker side of RebalanceClock: takes the step, logged with the consumer state."""

    clock: RebalanceClock
    rebalancing: Callable[[], bool]
    rejoin: Callable[[], Awaitable[None]]
    exit: Callable[[int], None]
    state: Callable[[], Any]
    now_ms: Callable[[], int]
    rescues: int = 0

    async def check(self) -> None:
        rescue = self.clock.observe(self.rebalancing(), self.now_ms())
        if rescue is None:
            return
        self.rescues += 1
        log.error("the group has been rebalancing for %.0fs without an assignment; rescue: %s. "
                  "consumer state: %s", self.clock.bound_ms / 1000, rescue.value, self.state())
        if rescue is Rescue.REJOIN:
            await self.rejoin()
        else:
            self.exit(STALL_EXIT_CODE)
