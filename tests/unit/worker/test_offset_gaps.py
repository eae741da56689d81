"""Skipped input records (app/offset_gaps.py): the offset tracker that notices them, and
the handler that hands them over before the record that revealed them."""

from __future__ import annotations

import asyncio

import pytest

from app.pipeline.intake import RawRecord
from app.worker import offset_gaps
from app.worker.offset_gaps import ExpectedOffsets, SkippedRecords, kept_expectations


def test_consecutive_offsets_are_no_gap():
    tracker = ExpectedOffsets()
    assert [tracker.skipped_before("in", 0, o, None) for o in (5, 6, 7)] == [None] * 3


def test_a_jump_names_the_offsets_between():
    tracker = ExpectedOffsets()
    tracker.skipped_before("in", 0, 193, None)
    assert tracker.skipped_before("in", 0, 215, None) == (194, 215)
    assert tracker.skipped_before("in", 0, 216, None) is None


def test_partitions_are_tracked_apart():
    tracker = ExpectedOffsets()
    tracker.skipped_before("in", 0, 10, None)
    tracker.skipped_before("in", 1, 50, None)
    assert tracker.skipped_before("in", 0, 11, None) is None
    assert tracker.skipped_before("in", 1, 53, None) == (51, 53)


def test_the_first_record_is_compared_with_the_committed_offset():
    tracker = ExpectedOffsets()
    assert tracker.skipped_before("in", 0, 72, 67) == (67, 72)
    assert ExpectedOffsets().skipped_before("in", 0, 67, 67) is None
    assert ExpectedOffsets().skipped_before("in", 0, 72, None) is None  # nothing known


def test_a_repeat_after_a_seek_back_is_no_gap_and_keeps_the_expectation():
    tracker = ExpectedOffsets()
    for offset in range(100, 110):
        tracker.skipped_before("in", 0, offset, None)
    assert tracker.skipped_before("in", 0, 95, None) is None  # Faust sought back
    assert tracker.skipped_before("in", 0, 96, None) is None
    assert tracker.skipped_before("in", 0, 110, None) is None
    assert tracker.skipped_before("in", 0, 112, None) == (111, 112)


def record(offset: int) -> RawRecord:
    return RawRecord("in", 0, offset, None, b"k", f"v{offset}".encode(), [])


def test_skipped_records_are_handled_first_in_offset_order(monkeypatch):
    reads = []

    def fake_read(config, topic, partition, start, end, timeout_s=30.0):
        reads.append((topic, partition, start, end))
        return [record(o) for o in range(start, end)]

    monkeypatch.setattr(offset_gaps, "read_range", fake_read)
    handled: list[int] = []
    marked: list[tuple] = []

    async def mark_done(topic: str, partition: int, start: int, end: int) -> None:
        marked.append((topic, partition, start, end, list(handled)))

    skipped = SkippedRecords({}, lambda: 1, lambda: {("in", 0)}, mark_done)
    monkeypatch.setattr(skipped, "committed", lambda topic, partition: None)

    async def handler(r: RawRecord) -> None:
        handled.append(r.offset)

    async def feed() -> None:
        for offset in (1, 2, 6, 7):
            await skipped.handle(record(offset), handler)

    asyncio.run(feed())
    assert handled == [1, 2, 3, 4, 5, 6, 7]
    assert reads == [("in", 0, 3, 6)]
    assert skipped.recovered == 3
    # Marked done once handled, before the record that revealed them.
    assert marked == [("in", 0, 3, 6, [1, 2, 3, 4, 5])]


def test_a_partition_never_committed_expects_its_first_offset(monkeypatch):
    # The fault run's lost order: no commit yet on a commands partition, and the record at
    # its first offset dropped on its way; the first record handed over (5) reveals it.
    reads = []

    def fake_read(config, topic, partition, start, end, timeout_s=30.0):
        reads.append((start, end))
        return [record(o) for o in range(start, end)]

    monkeypatch.setattr(offset_gaps, "read_range", fake_read)
    handled: list[int] = []

    async def handler(r: RawRecord) -> None:
        handled.append(r.offset)

    skipped = SkippedRecords({}, lambda: 1, lambda: {("in", 0)}, committed=lambda t, p: None,
                             earliest=lambda t, p: 2)
    asyncio.run(skipped.handle(record(5), handler))
    assert reads == [(2, 5)]
    assert handled == [2, 3, 4, 5]


def test_with_neither_a_commit_nor_a_first_offset_known_nothing_is_read(monkeypatch):
    monkeypatch.setattr(offset_gaps, "read_range", lambda *a, **k: pytest.fail("read"))
    handled: list[int] = []

    async def handler(r: RawRecord) -> None:
        handled.append(r.offset)

    skipped = SkippedRecords({}, lambda: 1, lambda: {("in", 0)}, committed=lambda t, p: None,
                             earliest=lambda t, p: None)
    asyncio.run(skipped.handle(record(5), handler))
    assert handled == [5]


def test_a_range_read_only_in_part_marks_only_what_was_read_as_done(monkeypatch):
    def partial_read(config, topic, partition, start, end, timeout_s=30.0):
        raise offset_gaps.RangeNotRead([record(3), record(4)], "read only up to 4 of 3-9")

    monkeypatch.setattr(offset_gaps, "read_range", partial_read)
    handled: list[int] = []
    marked: list[tuple] = []

    async def mark_done(topic: str, partition: int, start: int, end: int) -> None:
        marked.append((start, end))

    skipped = SkippedRecords({}, lambda: 1, lambda: {("in", 0)}, mark_done)
    monkeypatch.setattr(skipped, "committed", lambda topic, partition: None)

    async def handler(r: RawRecord) -> None:
        handled.append(r.offset)

    async def feed() -> None:
        for offset in (1, 2, 10):
            await skipped.handle(record(offset), handler)

    asyncio.run(feed())
    assert handled == [1, 2, 3, 4, 10]
    assert marked == [(3, 5)]  # 5-9 unknown: not counted as done (the commit fence holds)


def test_a_new_generation_starts_from_the_committed_offset(monkeypatch):
    reads = []

    def fake_read(config, topic, partition, start, end, timeout_s=30.0):
        reads.append((start, end))
        return [record(o) for o in range(start, end)]

    monkeypatch.setattr(offset_gaps, "read_range", fake_read)
    generation = [1]
    held = [{("in", 0)}]
    skipped = SkippedRecords({}, lambda: generation[0], lambda: held[0])
    committed = {1: None, 3: 40}
    monkeypatch.setattr(skipped, "committed", lambda topic, partition: committed[generation[0]])
    handled: list[int] = []

    async def handler(r: RawRecord) -> None:
        handled.append(r.offset)

    async def feed() -> None:
        for offset in (10, 11):
            await skipped.handle(record(offset), handler)
        generation[0], held[0] = 3, {("in", 0)}  # away in generation 2: another worker went on
        for offset in (42, 43):
            await skipped.handle(record(offset), handler)

    asyncio.run(feed())
    # Not 12-41 (those were the other worker's), only what lies past the committed offset.
    assert reads == [(40, 42)]
    assert handled == [10, 11, 40, 41, 42, 43]


def test_expectations_of_partitions_held_throughout_survive_a_rebalance():
    expected = {("in", 0): 509, ("in", 1): 300}
    assert kept_expectations(expected, 4, 5, {("in", 0), ("in", 1)}, {("in", 0)}) == {
        ("in", 0): 509}
    # Not held in the generation before (or a generation missed): nothing is kept.
    assert kept_expectations(expected, 4, 5, {("in", 1)}, {("in", 0)}) == {}
    assert kept_expectations(expected, 3, 5, {("in", 0)}, {("in", 0)}) == {}
    assert kept_expectations(expected, None, 1, set(), {("in", 0)}) == {}


def test_a_partition_held_throughout_a_rebalance_is_not_read_again(monkeypatch):
    reads = []
    monkeypatch.setattr(offset_gaps, "read_range",
                        lambda *args, **kw: reads.append(args[3:5]) or [])
    generation = [1]
    skipped = SkippedRecords({}, lambda: generation[0], lambda: {("in", 0)})
    monkeypatch.setattr(skipped, "committed", lambda topic, partition: 286)

    async def handler(r: RawRecord) -> None:
        return None

    async def feed() -> None:
        for offset in range(286, 509):
            await skipped.handle(record(offset), handler)
        generation[0] = 2  # commits lagged at 286; Faust seeks back and drops the repeats
        await skipped.handle(record(509), handler)

    asyncio.run(feed())
    assert reads == []


def test_faust_still_has_the_gap_record_the_worker_marks_read_again_offsets_in():
    # app/worker.py marks re-read offsets done with Faust's private Consumer._add_gap
    # (tp, offset_from, offset_to inclusive); a Faust upgrade that drops or changes it
    # would leave the commit behind those offsets.
    import inspect

    from faust.transport.consumer import Consumer

    assert inspect.iscoroutinefunction(Consumer._add_gap)
    assert list(inspect.signature(Consumer._add_gap).parameters) == [
        "self", "tp", "offset_from", "offset_to"]


def faust_consumer_view(acked: list[int], gap: tuple[int, int] | None, committed: int):
    """Faust's own commit-offset computation over a consumer's bookkeeping."""
    from collections import defaultdict
    from types import MethodType, SimpleNamespace

    from faust.transport.consumer import Consumer as FaustConsumer
    from intervaltree import IntervalTree

    tp = ("recovery.failures", 3)
    consumer = SimpleNamespace(_acked=defaultdict(list), _gap=defaultdict(IntervalTree),
                               _committed_offset={tp: committed},
                               _acked_index=defaultdict(set))
    consumer._acked[tp].extend(acked)
    consumer._acked_index[tp].update(acked)
    if gap is not None:
        consumer._gap[tp].addi(*gap)
    consumer._new_offset = MethodType(FaustConsumer._new_offset, consumer)
    return consumer, tp


def test_records_read_again_and_also_acked_late_do_not_hold_the_commit_back():
    # Committed 232; the records 232-480 were read again (a gap) and Faust also handed
    # most of them over later and acked them, with the rest of the partition.
    acked = list(range(300, 520))
    consumer, tp = faust_consumer_view(list(acked), (232, 481), committed=232)
    assert consumer._new_offset(tp) == 301  # Faust alone: the run ends at the first repeat
    consumer, tp = faust_consumer_view(list(acked), (232, 481), committed=232)
    offset_gaps.merge_gaps_once(consumer)
    assert consumer._new_offset(tp) == 520


def test_offsets_acked_after_they_were_committed_do_not_hold_the_commit_back():
    # 297 acked late, after a gap up to 298 was committed.
    consumer, tp = faust_consumer_view([297, 299, 300, 301], None, committed=299)
    assert consumer._new_offset(tp) == 298  # Faust alone: no further than committed
    consumer, tp = faust_consumer_view([297, 299, 300, 301], None, committed=299)
    offset_gaps.merge_gaps_once(consumer)
    offset_gaps.merge_gaps_once(consumer)  # once per consumer: not wrapped again
    assert consumer._new_offset(tp) == 302
    assert consumer._new_offset(tp) is None


def test_merge_gap_into_adds_the_gap_up_to_the_highest_acked_offset_once():
    from intervaltree import IntervalTree

    gap = IntervalTree()
    gap.addi(5, 8)
    gap.addi(20, 25)
    acked = [9, 7, 10, 7]
    offset_gaps.merge_gap_into(acked, gap, committed=6)
    assert acked == [6, 7, 9, 10]  # 5 was committed; 8 is still a hole
    assert sorted((i.begin, i.end) for i in gap) == [(20, 25)]  # beyond: kept for later
