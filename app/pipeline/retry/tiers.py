"""Delay-tier retry topics (Spring Kafka style): each tier holds records for one delay, so
the head of a tier partition is always the next one due and waiting on it blocks nobody
who is due earlier. Pure planning; the worker does the waiting and sending."""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

from app.pipeline.retry.backoff import tier_for

TIER_TOPIC = re.compile(r"^recovery\.retry\.(\d+)(ms|s|m)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000}
# Due within this much counts as due: re-parking for a few milliseconds costs more lateness
# than it saves.
DUE_TOLERANCE_MS = 5


def tier_delay_ms(logical_topic: str) -> int | None:
    match = TIER_TOPIC.match(logical_topic)
    return int(match.group(1)) * _UNIT_MS[match.group(2)] if match else None


@dataclass(frozen=True)
class Park:
    """Not due yet: into the tier that fits the remaining wait."""

    tier_ms: int
    due_ms: int


@dataclass(frozen=True)
class Hold:
    """Due, but the consumer is unhealthy: parked again without burning an attempt."""

    tier_ms: int
    due_ms: int


@dataclass(frozen=True)
class Dispatch:
    pass


RetryStep = Park | Hold | Dispatch


def wake_at(enqueued_ms: int, tier_ms: int, due_ms: int) -> int:
    """When the tier should look at a record again: its due time, or the end of this tier's
    delay if it is due later (it then moves on to a tier that fits)."""
    return min(due_ms, enqueued_ms + tier_ms)


def plan(due_ms: int, now_ms: int, consumer_healthy: bool, tiers_ms: list[int],
         hold_ms: int) -> RetryStep:
    remaining = due_ms - now_ms
    if remaining > DUE_TOLERANCE_MS:
        return Park(tier_for(remaining, tiers_ms), due_ms)
    if not consumer_healthy:
        return Hold(tier_for(hold_ms, tiers_ms), now_ms + hold_ms)
    return Dispatch()


def wake_order(positions: list[tuple[tuple[str, int], int]]) -> list[int]:
    """The order to handle a batch of tier records in, given each one's (partition, wake
    time): by wake time across partitions, and within a partition as read (a k-way merge of
    the partitions' runs), so a record due soon is not kept behind one due later in another
    partition, and per partition, order is kept."""
    runs: dict[tuple[str, int], list[int]] = {}
    for index, (partition, _) in enumerate(positions):
        runs.setdefault(partition, []).append(index)
    heads = [(positions[run[0]][1], run[0], key, 0) for key, run in runs.items()]
    heapq.heapify(heads)
    order: list[int] = []
    while heads:
        _, index, key, at = heapq.heappop(heads)
        order.append(index)
        run = runs[key]
        if at + 1 < len(run):
            following = run[at + 1]
            heapq.heappush(heads, (positions[following][1], following, key, at + 1))
    return order
