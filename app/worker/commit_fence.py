"""No input offset is committed past a record the worker has not handled.

Faust decides what to commit from its acks and from its gaps (offsets it counts as done
without an ack: a jump in offsets it takes for compaction, records read again). The gaps are
where it goes wrong: around a restart under back-to-back kills, the group's committed offset
of a recovery.failures partition stood past 15 failure events no worker had handled (no
lifecycle event, no incident), and the next worker, comparing the first record it got with
that committed offset, saw nothing missing. Which gap did it was not pinned down; the fence
does not need to know. It checks every commit, Faust's own and the commit repairs', against
the offsets the agents have handled (app/worker/batches.py tells it, once a batch's outputs
and changelog writes are on the broker):

- per input partition it keeps a baseline, the group's committed offset asked of Kafka when
  the partition is first committed in a consumer generation (everything below it was
  handled by a fenced commit of some member), and the offsets handled above it;
- a commit to offset O with a record below O above the baseline that was never handled is
  held at that record: it is committed up to there, the partition is sought back to it so
  Faust hands it over again (records after it are handled again: repeats with the same ids),
  and the hold is logged at ERROR and counted (`recovery_commit_repairs{kind="fenced"}`);
- offsets without a record (transaction markers, compacted records) are found by reading
  the range from Kafka and do not hold a commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.contracts.records import RawRecord
from app.worker.offset_gaps import RangeNotRead

log = logging.getLogger(__name__)

TP = tuple[str, int]

@dataclass
class HandledOffsets:
    """Per partition: a baseline (every offset below it is done) and the offsets handled at
    or above it. Pure bookkeeping; the baseline moves up over handled offsets."""

    base: dict[TP, int] = field(default_factory=dict)
    done: dict[TP, set[int]] = field(default_factory=dict)

    def handled(self, tp: TP, offset: int) -> None:
        base = self.base.get(tp)
        if base is not None and offset < base:
            return
        self.done.setdefault(tp, set()).add(offset)
        self._advance(tp)

    def set_base(self, tp: TP, base: int) -> None:
        self.base[tp] = base
        done = self.done.get(tp)
        if done:
            self.done[tp] = {offset for offset in done if offset >= base}
        self._advance(tp)

    def first_unhandled(self, tp: TP) -> int | None:
        """The lowest offset not known to be done; None while the baseline is unknown."""
        return self.base.get(tp)

    def unhandled(self, tp: TP, offsets: list[int]) -> list[int]:
        done = self.done.get(tp, set())
        base = self.base.get(tp, 0)
        return [offset for offset in offsets if offset >= base and offset not in done]

    def _advance(self, tp: TP) -> None:
        base = self.base.get(tp)
        done = self.done.get(tp)
        if base is None or not done:
            return
        while base in done:
            done.discard(base)
            base += 1
        self.base[tp] = base


def spans(offsets: list[int]) -> str:
    """Sorted offsets as ranges: [3, 4, 5, 9] -> '3-5, 9'."""
    runs: list[list[int]] = []
    for offset in sorted(offsets):
        if runs and offset == runs[-1][1] + 1:
            runs[-1][1] = offset
        else:
            runs.append([offset, offset])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class CommitFence:
    def __init__(self, topics: set[str],
                 committed: Callable[[list[TP]], dict[TP, int | None]],
                 watermarks: Callable[[str, int], tuple[int, int] | None],
                 read_range: Callable[[str, int, int, int], list[RawRecord]],
                 seek: Callable[[TP, int], Awaitable[None]],
                 generation: Callable[[], int]):
        self.topics = topics  # the agents' inputs (never the changelogs)
        self.committed = committed
        self.watermarks = watermarks
        self.read_range = read_range
        self.seek = seek
        self.generation = generation
        self.offsets = HandledOffsets()
        self.seen_generation: int | None = None
        self.stale: set[TP] = set()  # baselines to ask again (a new consumer generation)
        self.repairs = {"fenced": 0}  # commits held (recovery_commit_repairs{kind})

    def handled(self, records: list[tuple[str, int, int]]) -> None:
        for topic, partition, offset in records:
            if topic in self.topics:
                self.offsets.handled((topic, partition), offset)

    async def limit(self, offsets: dict[Any, int]) -> dict[Any, int]:
        """`offsets` (Faust TPs to the offsets to commit), each held at the first record
        below it that was never handled; a partition that may not move is left out."""
        loop = asyncio.get_running_loop()
        generation = self.generation()
        if generation != self.seen_generation:
            # Another member may have committed meanwhile: each baseline is asked again.
            self.stale = set(self.offsets.base)
            self.seen_generation = generation
        fenced = {tp: offset for tp, offset in offsets.items() if tp.topic in self.topics}
        ask = [(tp.topic, tp.partition) for tp in fenced
               if (tp.topic, tp.partition) in self.stale
               or self.offsets.first_unhandled((tp.topic, tp.partition)) is None]
        if ask:
            bases = await loop.run_in_executor(None, self.committed, ask)
            for key in ask:
                if key not in bases:
                    continue  # not known this time: an earlier baseline stays, if any
                base = bases[key]
                if base is None:  # never committed: the group reads from the earliest
                    marks = await loop.run_in_executor(None, self.watermarks, *key)
                    if marks is None:
                        continue
                    base = marks[0]
                self.stale.discard(key)
                self.offsets.set_base(key, max(base, self.offsets.base.get(key, base)))
        result = dict(offsets)
        for tp, offset in fenced.items():
            key = (tp.topic, tp.partition)
            first = self.offsets.first_unhandled(key)
            if first is None:
                # No baseline could be asked: Faust's choice stands (dropping it would lose
                # its acks for good, and the records be handled again after a restart).
                log.warning("%s[%d]: the group's committed offset is not known; committing "
                            "%d unchecked", tp.topic, tp.partition, offset)
                continue
            if offset <= first:
                continue
            try:
                records = await loop.run_in_executor(None, self.read_range, tp.topic,
                                                     tp.partition, first, offset)
                read_to = offset
            except RangeNotRead as partial:  # past what was read nothing is known
                records = partial.records
                read_to = records[-1].offset + 1 if records else first
            except Exception as exc:
                # Nothing is known past `first`: commit up to it, and look again next time
                # (a commit that raised would stop Faust's committing for good).
                result[tp] = first
                log.warning("%s[%d]: offsets %d-%d could not be read to check the commit "
                            "(%r); committing up to %d", tp.topic, tp.partition, first,
                            offset - 1, exc, first)
                continue
            present = [record.offset for record in records]
            for missing in sorted(set(range(first, read_to)) - set(present)):
                self.offsets.handled(key, missing)  # no record there: nothing to handle
            unhandled = self.offsets.unhandled(key, present + list(range(read_to, offset)))
            if not unhandled:
                continue
            # Everything below the first unhandled record is done: commit up to there.
            allowed = result[tp] = min(unhandled)
            self.repairs["fenced"] += 1
            log.error("%s[%d]: a commit to offset %d would pass %d record(s) this worker never "
                      "handled (%s); committing up to %d and reading from %d again",
                      tp.topic, tp.partition, offset, len(unhandled), spans(unhandled),
                      allowed, allowed)
            try:
                await self.seek(key, allowed)
            except Exception as exc:  # held all the same; the next commit seeks again
                log.error("%s[%d]: could not seek back to %d: %r", tp.topic, tp.partition,
                          allowed, exc)
        return result


FINAL_COMMIT_WAIT_S = 10.0


def install(consumer: Any, fence: CommitFence) -> None:
    """Faust's commit (`Consumer._commit_tps`) with the fence between choosing the offsets
    and publishing what is attached to them; as Faust's own, but for the fence. And Faust's
    last commit at a stop (`commit_and_end_transactions`) made even when a commit is in
    flight: Faust's returns without committing then, and that commit chose its offsets
    before the agents' last acks, so a worker stopped by SIGTERM right after a batch left
    it uncommitted and its successor handled it again (test_metrics_restart counted 9
    escalations for 7, in 3 of 6 clean-clone gates)."""
    if getattr(consumer, "_commit_fenced", False):
        return
    from faust.exceptions import ProducerSendError

    async def commit_tps(tps: Any, start_new_transaction: bool) -> bool:
        commit_offsets = consumer._filter_committable_offsets(tps)
        if commit_offsets:
            commit_offsets = await fence.limit(commit_offsets)
        if not commit_offsets:
            return False
        try:
            await consumer._handle_attached(commit_offsets)
        except ProducerSendError as exc:
            await consumer.crash(exc)
            return False
        return bool(await consumer._commit_offsets(
            commit_offsets, start_new_transaction=start_new_transaction))

    async def final_commit() -> None:
        in_flight = consumer._commit_fut
        if in_flight is not None:
            # Bounded: the worker's shutdown has a deadline of its own as well.
            await asyncio.wait({in_flight}, timeout=FINAL_COMMIT_WAIT_S)
            if not in_flight.done():
                log.warning("the commit in flight at the stop did not finish within %.0f s",
                            FINAL_COMMIT_WAIT_S)
        await consumer.commit(start_new_transaction=False)

    consumer._commit_tps = commit_tps
    consumer.commit_and_end_transactions = final_commit
    consumer._commit_fenced = True
