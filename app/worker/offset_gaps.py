"""Input records Faust never handed to an agent, found by their offsets and read again.

Faust 0.15 can let records of an input partition pass without processing them: its stream
drops, without handing it over, a message fetched while flow control is off or under
another consumer generation, and its consumer takes the following jump in offsets for a
compaction gap and commits past it. Around a worker's restart, with a rebalance and a seek
to the committed offsets racing the first fetches, that happened in the fault run: 5 to 65
consecutive failure events per partition never reached the agent and never got an outcome
(docs/exactly-once.md).

So each agent knows, per input partition, the offset it expects next. A record further on
means the ones between were skipped: they are read straight from Kafka and handled before
it. A record read twice is harmless (every output has a deterministic id), so a false
alarm costs a repeat, never a loss.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from app.contracts.records import RawRecord
from app.worker.task_dump import await_chain

log = logging.getLogger(__name__)


@dataclass
class ExpectedOffsets:
    """The offset expected next on each partition an agent reads."""

    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    def skipped_before(self, topic: str, partition: int, offset: int,
                       committed: int | None) -> tuple[int, int] | None:
        """The offsets [start, end) skipped before this record, or None. For a partition
        not seen yet the committed offset is the expectation (None: nothing to compare)."""
        key = (topic, partition)
        expected = self.next_offset.get(key, committed)
        # A record below the expectation is a repeat after a seek back: no gap, and the
        # expectation stays where it was.
        self.next_offset[key] = max(offset + 1, self.next_offset.get(key, 0))
        if expected is not None and offset > expected:
            return expected, offset
        return None


class RangeNotRead(Exception):
    """The range could not be read to its end in time; `records` holds what was read (the
    offsets after the last of them are unknown, not empty)."""

    def __init__(self, records: list[RawRecord], why: str):
        super().__init__(why)
        self.records = records


def read_range(config: dict[str, Any], topic: str, partition: int, start: int, end: int,
               timeout_s: float = 30.0) -> list[RawRecord]:
    """The records at offsets [start, end) of one partition, read by assignment: the
    consumer never joins its group and never commits. Offsets without a record (transaction
    markers) are passed over. Raises RangeNotRead when the end is not reached in time."""
    consumer = Consumer({**config, "enable.auto.commit": False})
    records: list[RawRecord] = []
    try:
        tp = TopicPartition(topic, partition, start)
        consumer.assign([tp])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() or message.offset() >= end:
                    continue
                kind, stamp = message.timestamp()
                records.append(RawRecord(topic, partition, message.offset(),
                                         stamp if kind else None, message.key(),
                                         message.value(), list(message.headers() or [])))
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if position >= end or (records and records[-1].offset >= end - 1):
                break
        else:
            why = (f"{topic}[{partition}]: read only up to offset "
                   f"{records[-1].offset if records else None} of {start}-{end - 1} in "
                   f"{timeout_s:.0f}s")
            log.error("%s", why)
            raise RangeNotRead(records, why)
    finally:
        consumer.close()
    return records


class RecordReader:
    """Reads single records by position with one long-lived consumer (by assignment, never
    committing), on a thread of its own: the watchdog reads a failure report again this way,
    and a consumer made for each read cost about a second on a loaded machine."""

    def __init__(self, config: dict[str, Any], timeout_s: float = 10.0):
        self.config = {**config, "enable.auto.commit": False}
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record-reader")

    def _read(self, topic: str, partition: int, offset: int) -> RawRecord | None:
        if self._consumer is None:
            self._consumer = Consumer(self.config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            message = self._consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.offset() == offset:
                kind, stamp = message.timestamp()
                return RawRecord(topic, partition, offset, stamp if kind else None,
                                 message.key(), message.value(), list(message.headers() or []))
            if message.offset() > offset:
                return None  # compacted or deleted
        log.error("%s[%d]@%d could not be read within %.0f s", topic, partition, offset,
                  self.timeout_s)
        return None

    async def read(self, topic: str, partition: int, offset: int) -> RawRecord | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, topic, partition, offset)


def kept_expectations(next_offset: dict[tuple[str, int], int], previous_generation: int | None,
                      generation: int, previous_assignment: set[tuple[str, int]],
                      assignment: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The expectations still valid in a new consumer generation: those of partitions this
    worker held in the generation just before and holds again. In between, with eager
    rebalancing, no other member can have processed them; any other partition may have
    moved on elsewhere, so its expectation is dropped."""
    if previous_generation is None or generation != previous_generation + 1:
        return {}
    kept = previous_assignment & assignment
    return {tp: offset for tp, offset in next_offset.items() if tp in kept}


class CommittedOffsets:
    """The group's committed offset of a partition, asked of Kafka by one consumer that
    never joins the group (shared by the agents of a worker)."""

    def __init__(self, consumer_config: dict[str, Any]):
        self.config = consumer_config
        self._reader: Consumer | None = None
        self._lock = threading.Lock()  # the agents ask from executor threads

    def _consumer(self) -> Consumer:
        with self._lock:
            if self._reader is None:
                self._reader = Consumer({**self.config, "enable.auto.commit": False})
            return self._reader

    def __call__(self, topic: str, partition: int) -> int | None:
        try:
            [tp] = self._consumer().committed([TopicPartition(topic, partition)], timeout=10)
        except Exception as exc:  # no baseline this time: only jumps within the stream count
            log.warning("committed offset of %s[%d] unknown: %s", topic, partition, exc)
            return None
        return tp.offset if tp.offset >= 0 else None

    def many(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """The group's committed offsets of several partitions in one request; a partition
        left out of the answer (the request failed) is not known."""
        if not partitions:
            return {}
        try:
            answer = self._consumer().committed([TopicPartition(t, p) for t, p in partitions],
                                                timeout=10)
        except Exception as exc:
            log.warning("committed offsets of %d partition(s) unknown: %s", len(partitions), exc)
            return {}
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in answer if tp.error is None}

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        """The partition's first and end offsets on the broker now (None: not known)."""
        try:
            return self._consumer().get_watermark_offsets(TopicPartition(topic, partition),
                                                          timeout=10)
        except Exception as exc:
            log.warning("watermarks of %s[%d] unknown: %s", topic, partition, exc)
            return None


class SkippedRecords:
    """Per agent: finds the records skipped before each one and hands them over first.

    At a new consumer generation only the expectations of partitions held throughout stay
    (kept_expectations); the first record of any other partition is compared with the
    group's committed offset, asked of Kafka then."""

    def __init__(self, consumer_config: dict[str, Any], generation: Callable[[], int],
                 assignment: Callable[[], set[tuple[str, int]]],
                 mark_done: Callable[[str, int, int, int], Awaitable[None]] | None = None,
                 committed: Callable[[str, int], int | None] | None = None,
                 earliest: Callable[[str, int], int | None] | None = None):
        self.config = consumer_config
        self.committed = committed or CommittedOffsets(consumer_config)
        # Where the group reads a partition it never committed from (the worker's consumer
        # resets to the earliest offset): the partition's first offset, None if not known.
        # Without it the first records of such a partition, dropped on their way, were not
        # missed: a fault run's replacement worker handled an acknowledgement at offset 0 of
        # a commands partition only after the commit fence sought back to it, a minute
        # later and after the watchdog had dead-lettered the incident it completed.
        self.earliest = earliest
        self.generation = generation
        self.assignment = assignment
        self.seen_assignment: set[tuple[str, int]] = set()
        # Tells the consumer that offsets [start, end) are handled: the skipped records
        # were never acknowledged, and without this the commit would stay behind them.
        self.mark_done = mark_done
        self.seen_generation: int | None = None
        self.tracker = ExpectedOffsets()
        self.recovered = 0
        self.busy = False  # a record (or a re-read range) is being handled now
        self.handled = 0  # records handed to this agent so far (the stall guard's progress)

    def expected(self, tp: tuple[str, int]) -> int | None:
        """The offset the agent expects next on `tp` in the current consumer generation
        (None: it has handled nothing there in this generation)."""
        if self.seen_generation != self.generation():
            return None
        return self.tracker.next_offset.get(tp)

    async def handle(self, record: RawRecord,
                     handler: Callable[[RawRecord], Awaitable[None]]) -> None:
        self.busy = True
        try:
            await self._handle(record, handler)
        finally:
            self.busy = False
            self.handled += 1

    async def _handle(self, record: RawRecord,
                      handler: Callable[[RawRecord], Awaitable[None]]) -> None:
        generation = self.generation()
        if generation != self.seen_generation:
            assignment = self.assignment()
            self.tracker = ExpectedOffsets(kept_expectations(
                self.tracker.next_offset, self.seen_generation, generation,
                self.seen_assignment, assignment))
            self.seen_generation, self.seen_assignment = generation, assignment
        committed = None
        if (record.topic, record.partition) not in self.tracker.next_offset:
            loop = asyncio.get_running_loop()
            committed = await loop.run_in_executor(None, self.committed, record.topic,
                                                   record.partition)
            if committed is None and self.earliest is not None:
                committed = await loop.run_in_executor(None, self.earliest, record.topic,
                                                       record.partition)
        gap = self.tracker.skipped_before(record.topic, record.partition, record.offset,
                                          committed)
        if gap is not None:
            start, end = gap
            try:
                missed = await asyncio.get_running_loop().run_in_executor(
                    None, read_range, self.config, record.topic, record.partition, start, end)
            except RangeNotRead as partial:
                # Only what was read counts as done; the commit fence holds the rest.
                missed = partial.records
                end = missed[-1].offset + 1 if missed else start
            if missed:
                log.warning("%s[%d]: offsets %d-%d never reached the agent; read %d "
                            "record(s) again from Kafka", record.topic, record.partition,
                            start, end - 1, len(missed))
                self.recovered += len(missed)
            for earlier in missed:
                await handler(earlier)
            if self.mark_done is not None and end > start:
                await self.mark_done(record.topic, record.partition, start, end)
        await handler(record)


def commit_held(faust_committed: int | None, lowest_acked: int | None) -> bool:
    """Faust will not commit the partition: its lowest acked offset is more than one past
    the offset it believes committed (it commits without that check when it knows none)."""
    return bool(faust_committed) and lowest_acked is not None \
        and lowest_acked - faust_committed > 1  # type: ignore[operator]


@dataclass(frozen=True)
class CommitAhead:
    """Faust believes `offset` committed, the group has less: commit `offset` for it."""

    offset: int


@dataclass(frozen=True)
class RaiseToGroup:
    """Faust's committed offset is stale below the group's and holds its commits: take
    the group's `offset`."""

    offset: int


@dataclass(frozen=True)
class ReadAgain:
    """Offsets from `offset` up to the lowest acked one were never acked here and nothing
    moves: seek back to `offset` so Faust hands them over again."""

    offset: int


CommitRepair = CommitAhead | RaiseToGroup | ReadAgain


def commit_repair(faust_committed: int | None, lowest_acked: int | None,
                  group_committed: int | None, unchanged: bool) -> CommitRepair | None:
    """What to do about one input partition's commit, from Faust's view (the offset it
    believes committed, its lowest acked offset not committed yet), the group's committed
    offset asked of Kafka, and whether Faust's view is the same as at the last check.

    Faust's view and Kafka's part ways around rebalances (docs/exactly-once.md, "Commits
    left behind"): Faust records a commit the broker refused ("already rebalanced") as
    made, re-reads the committed offsets while a commit is in flight, and once committed
    an offset below the group's. Each of the three leaves the partition's commit stuck for
    good while nothing is lost. Everything below any offset Faust believes committed was
    acked by some member (its outputs delivered), and so is everything below the group's:
    committing the higher of the two is always safe.
    """
    if faust_committed is None:
        return None  # Faust commits whatever it has then (no head check)
    if group_committed is None or group_committed < faust_committed:
        return CommitAhead(faust_committed)
    if not commit_held(faust_committed, lowest_acked):
        return None
    if group_committed > faust_committed:
        return RaiseToGroup(group_committed)
    # The group agrees with Faust and the records between were never acked here. While
    # they may still be on their way (a batch in hand), wait; a view that lasts is a hole.
    return ReadAgain(faust_committed) if unchanged else None


def contiguous_end(committed: int | None, acked: list[int],
                   gaps: list[tuple[int, int]]) -> int | None:
    """The offset Faust's next commit of a partition would take: one past the unbroken run
    of acked offsets (and gap ranges [begin, end), counted as done) that starts at most one
    past `committed`; None when there is nothing to commit."""
    done = set(acked)
    for begin, end in gaps:
        done.update(range(begin, end))
    if not done:
        return None
    first = min(done)
    if committed is not None and first - committed > 1:
        return None  # a hole at the head: Faust would not commit either
    offset = first
    while offset in done:
        offset += 1
    return offset if committed is None or offset > committed else None


def commit_stacks() -> str:
    """The await chains of this event loop's tasks that are in a commit."""
    chains = []
    for task in asyncio.all_tasks():
        chain = await_chain(task)
        if any("commit" in line for line in chain):
            chains.append(f"{task.get_name()}:\n" + "\n".join(chain))
    return "\n".join(chains) or "(no task in a commit found)"


class CommitReconciler:
    """Every few seconds, per input partition: Faust's view of its commit against the
    group's committed offset asked of Kafka, and the repair commit_repair names."""

    def __init__(self, consumer: Callable[[], Any],
                 committed: Callable[[list[tuple[str, int]]], dict[tuple[str, int], int | None]],
                 inputs: set[str], read_again: set[str],
                 seek: Callable[[tuple[str, int], int], Awaitable[None]],
                 busy: Callable[[], bool], hung_after_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 flush: Callable[[], Awaitable[None]] | None = None,
                 limit: Callable[[dict[Any, int]], Awaitable[dict[Any, int]]] | None = None):
        self.consumer = consumer
        self.committed = committed
        self.inputs = inputs  # topics Faust commits for the worker (never its changelogs)
        self.read_again = read_again  # those where a hole is read again (not the tiers)
        self.seek = seek
        self.busy = busy
        self.last_view: dict[Any, tuple[int | None, int | None]] = {}
        self.read_again_at: dict[Any, tuple[int | None, int | None]] = {}  # one seek a view
        self.repairs: dict[str, int] = {"commit_ahead": 0, "raise_to_group": 0,
                                        "read_again": 0, "commit_hung": 0,
                                        "commit_beside": 0}
        self.hung_after_s = hung_after_s
        self.clock = clock
        self.flush = flush  # Faust's producer flush (its changelogs), before a commit
        self._commit_seen: tuple[Any, float] | None = None  # Faust's commit future, since
        # The commit fence (app/worker/commit_fence.py): what these commits may take.
        self.limit = limit

    def commit_in_flight(self, consumer: Any) -> bool:
        """Whether Faust is committing now; a commit that has not returned within
        `hung_after_s` is reported once at ERROR with where it waits (every later commit of
        every partition waits on it: seen in a gate, the cause not found yet)."""
        future = getattr(consumer, "_commit_fut", None)
        if future is None:
            self._commit_seen = None
            return False
        now = self.clock()
        if self._commit_seen is None or self._commit_seen[0] is not future:
            self._commit_seen = (future, now)
        elif self._commit_seen[1] >= 0 and now - self._commit_seen[1] >= self.hung_after_s:
            self.repairs["commit_hung"] += 1
            log.error("Faust's offset commit has not returned for %.0f s; no partition is "
                      "committed meanwhile. Where it waits:\n%s", now - self._commit_seen[1],
                      commit_stacks())
            self._commit_seen = (future, -1.0)  # once for this commit
        return True

    async def check(self) -> list[tuple[Any, CommitRepair]]:
        consumer = self.consumer()
        loop = asyncio.get_running_loop()
        done: list[tuple[Any, CommitRepair]] = []
        if self.commit_in_flight(consumer):
            if self._commit_seen is not None and self._commit_seen[1] < 0:
                await self.commit_beside(consumer)  # Faust's own commit does not return
            return done  # Faust is committing: its view is about to change
        assignment = set(consumer.assignment())
        views = {}
        for tp in assignment:
            if tp.topic not in self.inputs:
                continue
            # Offsets Faust counts as done without an ack (its gaps: records read again,
            # compaction) fill a hole as acks do, at its next commit.
            counted = list(consumer._acked.get(tp) or ())
            counted += [interval.begin for interval in (consumer._gap.get(tp) or ())]
            views[tp] = (consumer._committed_offset.get(tp),
                         min(counted) if counted else None)
        last, self.last_view = self.last_view, views
        known = sorted(tp for tp, view in views.items() if view[0] is not None)
        # One request for all of them: a worker holds a hundred input partitions or more.
        groups = await loop.run_in_executor(
            None, self.committed, [(tp.topic, tp.partition) for tp in known])
        assignment_now = set(consumer.assignment())
        for tp in known:
            view = views[tp]
            faust_committed, lowest = view
            if getattr(consumer, "_commit_fut", None) is not None:
                return done  # Faust began committing while the group was asked
            if (tp.topic, tp.partition) not in groups:
                continue  # not known this time
            group = groups[(tp.topic, tp.partition)]
            # Read again after the wait: a commit or a rebalance may have moved it meanwhile.
            if tp not in assignment_now or consumer._committed_offset.get(tp) != faust_committed:
                continue
            repair = commit_repair(faust_committed, lowest, group, last.get(tp) == view)
            if isinstance(repair, ReadAgain):
                if tp.topic not in self.read_again or self.busy() \
                        or self.read_again_at.get(tp) == view:
                    continue
                self.read_again_at[tp] = view
            if repair is None:
                continue
            await self._apply(consumer, tp, repair, group, lowest)
            done.append((tp, repair))
        return done

    async def commit_beside(self, consumer: Any, bound_s: float = 15.0) -> dict[Any, int]:
        """Commits, beside a Faust commit that does not return, what Faust's own next commit
        would (contiguous_end per input partition held), after what Faust does first: its
        producer flushed (the tables' changelogs) and the messages attached to those offsets
        published, each within `bound_s`. If one of them does not return either, nothing is
        committed and that is logged. Faust's bookkeeping then moves as after its commit."""
        offsets: dict[Any, int] = {}
        for tp in set(consumer.assignment()):
            if tp.topic not in self.inputs:
                continue
            gaps = [(i.begin, i.end) for i in (consumer._gap.get(tp) or ())]
            end = contiguous_end(consumer._committed_offset.get(tp),
                                 list(consumer._acked.get(tp) or ()), gaps)
            if end is not None:
                offsets[tp] = end
        if offsets and self.limit is not None:
            offsets = await self.limit(offsets)
        if not offsets:
            return {}
        step = "flushing Faust's producer"
        try:
            if self.flush is not None:
                await asyncio.wait_for(self.flush(), bound_s)
            step = "publishing the attached messages"
            await asyncio.wait_for(consumer._handle_attached(offsets), bound_s)
            step = "committing"
            committed = await asyncio.wait_for(consumer._commit(offsets), bound_s)
        except TimeoutError:
            log.error("commit beside the hung one: %s did not return within %.0f s; nothing "
                      "committed", step, bound_s)
            return {}
        if not committed:
            log.error("commit beside the hung one: refused")
            return {}
        for tp, offset in offsets.items():
            consumer._committed_offset[tp] = offset
            acked = consumer._acked.get(tp)
            if acked is not None:
                acked[:] = [a for a in acked if a >= offset]
                index = consumer._acked_index.get(tp)
                if index is not None:
                    index.intersection_update(acked)
            gap = consumer._gap.get(tp)
            if gap:
                gap.chop(0, offset)
        self.repairs["commit_beside"] += 1
        log.warning("committed %d partition(s) beside Faust's hung commit: %s", len(offsets),
                    {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(offsets.items())})
        return offsets

    async def _apply(self, consumer: Any, tp: Any, repair: CommitRepair,
                     group: int | None, lowest: int | None) -> None:
        name = f"{tp.topic}[{tp.partition}]"
        match repair:
            case CommitAhead(offset):
                log.warning("%s: Faust believes offset %d committed, the group has %s: "
                            "committing %d", name, offset, group, offset)
                offsets = {tp: offset}
                if self.limit is not None:
                    offsets = await self.limit(offsets)
                if offsets and await consumer._commit(offsets):
                    self.repairs["commit_ahead"] += 1
            case RaiseToGroup(offset):
                log.warning("%s: Faust held its commit at offset %s while the group's "
                            "committed offset is %d (acked from %s on): taking the group's",
                            name, consumer._committed_offset.get(tp), offset, lowest)
                consumer._committed_offset[tp] = offset
                self.repairs["raise_to_group"] += 1
            case ReadAgain(offset):
                log.warning("%s: offsets %d-%s were never acked and nothing moved for a "
                            "check: reading them again from %d", name, offset,
                            (lowest or offset) - 1, offset)
                await self.seek((tp.topic, tp.partition), offset)
                self.repairs["read_again"] += 1


def merge_gaps_once(consumer: Any) -> None:
    """Makes Faust's commit offset (`_new_offset`) count an offset acked twice once.

    A record read again here is also marked done as a gap (`mark_done`), and Faust may hand
    it over later after all (it was late, not dropped) and ack it: its `_new_offset` then
    merges the gap into the acked offsets with the offset in them twice, and its run of
    consecutive offsets ends at the repeat. Each commit moved on by one offset, so a worker
    restarted after a kill (its 249 records of a partition read again) stayed minutes
    behind with everything handled (the exactly-once SIGKILL test's "commits stayed
    behind"). A late record acked after its offset was committed as part of a gap likewise
    began a run below the committed offset that ended the commit there. Installed once per
    consumer; the gap merge is done before Faust's, with the repeats and the offsets
    already committed dropped, and Faust's own step then finds nothing more to merge."""
    if getattr(consumer, "_merges_gaps_once", False):
        return
    original = consumer._new_offset

    def new_offset(tp: Any) -> Any:
        acked = consumer._acked[tp]
        if acked:
            merge_gap_into(acked, consumer._gap[tp], consumer._committed_offset.get(tp))
        return original(tp)

    consumer._new_offset = new_offset
    consumer._merges_gaps_once = True


def merge_gap_into(acked: list[int], gap: Any, committed: int | None = None) -> None:
    """Moves the gap's intervals (an intervaltree.IntervalTree, as Faust keeps them) up to
    the highest acked offset into `acked`, and leaves `acked` sorted, without repeats and
    without the offsets below `committed` (the next offset to read: those are done)."""
    highest = max(acked)
    if gap:
        intervals = sorted(gap.overlap(0, highest), key=lambda interval: interval.begin)
        if intervals:
            added = [offset for interval in intervals
                     for offset in range(interval.begin, interval.end)]
            acked.extend(added)
            gap.chop(0, max(added[-1], highest + 1))
    floor = committed if committed is not None else -1
    acked[:] = sorted({offset for offset in acked if offset >= floor})
