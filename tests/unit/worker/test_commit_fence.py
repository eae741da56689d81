"""The commit fence: no input offset is committed past a record the worker never handled
(app/worker/commit_fence.py)."""

from __future__ import annotations

import asyncio
import logging

from faust.types import TP

from app.contracts.records import RawRecord
from app.worker.commit_fence import CommitFence, HandledOffsets, install, spans
from app.worker.offset_gaps import RangeNotRead

FAILURES = "t.recovery.failures"
KEY = (FAILURES, 10)


def tp(topic: str = FAILURES, partition: int = 10) -> TP:
    return TP(topic, partition)  # Faust's own


def test_the_baseline_moves_up_over_handled_offsets_only():
    offsets = HandledOffsets()
    for offset in (11, 12, 14):
        offsets.handled(KEY, offset)
    assert offsets.first_unhandled(KEY) is None  # no baseline yet
    offsets.set_base(KEY, 11)
    assert offsets.first_unhandled(KEY) == 13  # 11 and 12 handled, 13 not
    offsets.handled(KEY, 13)
    assert offsets.first_unhandled(KEY) == 15  # 14 was handled before
    offsets.handled(KEY, 3)  # below the baseline: done already
    assert offsets.unhandled(KEY, [3, 15, 16]) == [15, 16]


def test_a_new_generation_asks_the_baseline_again_and_keeps_what_was_handled():
    kafka = Kafka({KEY: 5}, {KEY: list(range(0, 10))})
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, o) for o in (5, 6, 8)])
    assert asyncio.run(fence.limit({tp(): 7})) == {tp(): 7}
    kafka.generation = 2
    kafka.committed_offsets[KEY] = 8  # another member committed up to 8 meanwhile
    assert asyncio.run(fence.limit({tp(): 9})) == {tp(): 9}  # 8 was handled here
    assert kafka.asked == 2
    kafka.generation = 3
    fence.committed = lambda keys: {}  # the request fails: the last baseline stands
    assert asyncio.run(fence.limit({tp(): 9})) == {tp(): 9}


class Kafka:
    """The group's committed offsets, the partition's records and the seeks asked for."""

    def __init__(self, committed: dict, records: dict, low: int = 0) -> None:
        self.committed_offsets, self.records, self.low = committed, records, low
        self.sought: list = []
        self.generation = 1
        self.asked = 0

    def fence(self) -> CommitFence:
        def committed(keys):
            self.asked += 1
            return {key: self.committed_offsets.get(key) for key in keys}

        def read_range(topic, partition, start, end):
            return [RawRecord(topic, partition, o, None, b"k", b"v", [])
                    for o in self.records.get((topic, partition), []) if start <= o < end]

        async def seek(key, offset):
            self.sought.append((key, offset))

        return CommitFence({FAILURES}, committed, lambda t, p: (self.low, 99), read_range,
                           seek, lambda: self.generation)


def test_a_commit_past_records_never_handled_is_held_at_the_first_and_read_again(caplog):
    # The kill test's loss: the group at 11, offsets 11-25 never handled here, 26-28
    # handled; Faust's commit would have taken 29.
    kafka = Kafka({KEY: 11}, {KEY: list(range(0, 29))})
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, o) for o in (26, 27, 28)])
    with caplog.at_level(logging.ERROR, logger="app.worker.commit_fence"):
        result = asyncio.run(fence.limit({tp(): 29}))
    assert result == {tp(): 11}
    assert kafka.sought == [(KEY, 11)]
    assert fence.repairs["fenced"] == 1
    assert "15 record(s) this worker never handled (11-25)" in caplog.text


def test_a_commit_over_handled_records_passes_untouched():
    kafka = Kafka({KEY: 11}, {KEY: list(range(0, 29))})
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, o) for o in range(11, 29)])
    other = tp("t.recovery.events-changelog", 0)  # not an agent input: never fenced
    assert asyncio.run(fence.limit({tp(): 29, other: 500})) == {tp(): 29, other: 500}
    assert kafka.sought == []
    asyncio.run(fence.limit({tp(): 29}))
    assert kafka.asked == 1  # the baseline is asked once a generation
    kafka.generation = 2
    asyncio.run(fence.limit({tp(): 29}))
    assert kafka.asked == 2


def test_offsets_without_a_record_do_not_hold_a_commit():
    # Transaction markers at 13 and 16: no record there, nothing to handle.
    kafka = Kafka({KEY: 11}, {KEY: [11, 12, 14, 15, 17]})
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, o) for o in (11, 12, 14, 15, 17)])
    assert asyncio.run(fence.limit({tp(): 18})) == {tp(): 18}
    assert kafka.sought == []


def test_a_range_not_read_to_its_end_holds_the_commit_where_knowledge_ends():
    kafka = Kafka({KEY: 11}, {})
    fence = kafka.fence()

    def partial(topic, partition, start, end):
        raise RangeNotRead([RawRecord(topic, partition, 12, None, b"k", b"v", [])], "timeout")

    fence.read_range = partial
    fence.handled([(FAILURES, 10, o) for o in (11, 12, 20)])
    # 11 and 12 handled; 13-19 unknown (not "no record"): the commit stops at 13.
    assert asyncio.run(fence.limit({tp(): 21})) == {tp(): 13}
    assert kafka.sought == [(KEY, 13)]


def test_a_range_that_cannot_be_read_holds_the_commit_at_the_first_unhandled():
    kafka = Kafka({KEY: 11}, {})
    fence = kafka.fence()

    def broken(topic, partition, start, end):
        raise RuntimeError("broker gone")

    fence.read_range = broken
    fence.handled([(FAILURES, 10, o) for o in (11, 12, 20)])
    # Nothing known past 13: committed up to it, no seek (the check is made again next time),
    # and the commit itself does not raise (that would stop Faust's committing).
    assert asyncio.run(fence.limit({tp(): 21})) == {tp(): 13}
    assert kafka.sought == []


def test_a_seek_that_fails_still_holds_the_commit():
    kafka = Kafka({KEY: 11}, {KEY: list(range(0, 29))})
    fence = kafka.fence()

    async def failing_seek(key, offset):
        raise TimeoutError

    fence.seek = failing_seek
    fence.handled([(FAILURES, 10, o) for o in (26, 27, 28)])
    assert asyncio.run(fence.limit({tp(): 29})) == {tp(): 11}


def test_a_partition_never_committed_has_the_earliest_offset_as_its_baseline():
    kafka = Kafka({}, {KEY: [3, 4, 5]}, low=3)
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, 5)])
    assert asyncio.run(fence.limit({tp(): 6})) == {tp(): 3}
    assert kafka.sought == [(KEY, 3)]


def test_a_partition_whose_baseline_was_never_known_keeps_faust_s_offset():
    # Dropping it would lose Faust's acks for good (they are taken when it picks the
    # offset), and a restarted worker would handle those records again.
    kafka = Kafka({}, {})
    fence = kafka.fence()
    fence.committed = lambda keys: {}  # the request failed
    assert asyncio.run(fence.limit({tp(): 6})) == {tp(): 6}


class Consumer:
    """The parts of Faust's consumer the fenced commit uses."""

    def __init__(self, offsets: dict) -> None:
        self.offsets = offsets
        self.attached: list = []
        self.committed: list = []

    def _filter_committable_offsets(self, tps):
        return dict(self.offsets)

    async def _handle_attached(self, offsets):
        self.attached.append(dict(offsets))

    async def _commit_offsets(self, offsets, start_new_transaction=True):
        self.committed.append(dict(offsets))
        return True


def test_faust_commits_what_the_fence_allows_and_publishes_only_that():
    kafka = Kafka({KEY: 11}, {KEY: list(range(0, 29))})
    fence = kafka.fence()
    fence.handled([(FAILURES, 10, o) for o in (26, 27, 28)])
    consumer = Consumer({tp(): 29})
    install(consumer, fence)
    install(consumer, fence)  # once per consumer
    assert asyncio.run(consumer._commit_tps([tp()], True)) is True
    assert consumer.attached == consumer.committed == [{tp(): 11}]


def test_the_last_commit_at_a_stop_waits_for_one_in_flight_and_then_commits():
    kafka = Kafka({KEY: 11}, {KEY: list(range(0, 29))})
    consumer = Consumer({tp(): 29})
    consumer._commit_fut = None
    calls: list[str] = []

    async def commit(start_new_transaction=True):
        # As Faust's: nothing is committed while another commit is in flight.
        calls.append("skipped" if consumer._commit_fut is not None else "committed")

    consumer.commit = commit
    install(consumer, kafka.fence())

    async def stop() -> None:
        consumer._commit_fut = asyncio.get_running_loop().create_future()

        async def periodic_commit_finishes() -> None:
            await asyncio.sleep(0.05)
            fut, consumer._commit_fut = consumer._commit_fut, None
            fut.set_result(None)

        finishing = asyncio.ensure_future(periodic_commit_finishes())
        await consumer.commit_and_end_transactions()
        await finishing

    asyncio.run(stop())
    assert calls == ["committed"]


def test_faust_s_last_commit_is_the_one_the_stop_makes():
    # Faust's consumer commits for the last time through commit_and_end_transactions when it
    # stops (the replacement above); a Faust upgrade that changes that fails here.
    import inspect

    from faust.transport.consumer import Consumer as FaustConsumer

    assert "commit_and_end_transactions" in inspect.getsource(FaustConsumer.on_stop)
    assert "commit_and_end_transactions" in inspect.getsource(FaustConsumer.wait_empty)
    assert "_commit_fut" in inspect.getsource(FaustConsumer.maybe_wait_for_commit_to_finish)


def test_faust_s_commit_has_the_shape_the_fence_replaces():
    # The fence takes the place of Faust's private Consumer._commit_tps and calls the three
    # steps it is made of; a Faust upgrade that changes them fails here.
    import inspect

    from faust.transport.consumer import Consumer as FaustConsumer

    source = inspect.getsource(FaustConsumer._commit_tps)
    for step in ("_filter_committable_offsets", "_handle_attached", "_commit_offsets"):
        assert step in source
    assert list(inspect.signature(FaustConsumer._commit_tps).parameters) == [
        "self", "tps", "start_new_transaction"]


def test_spans():
    assert spans([9, 3, 4, 5]) == "3-5, 9"
    assert spans([]) == ""
