"""Lifecycle-event counts by input partition (app/lifecycle_counts.py): keys, tallies, and
which partitions a worker reports."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.worker import lifecycle_counts as lc


class Changelog:
    """What was sent to the changelog without a record in hand."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, dict[str, int]]] = []

    async def __call__(self, partition: int, key: str, value: dict[str, int]) -> None:
        self.sent.append((partition, key, value))


def test_a_key_names_its_topic_and_partition_even_with_bars_in_the_topic():
    assert lc.source_of(lc.source_key("a|b.failures", 2)) == ("a|b.failures", 2)
    assert lc.source_of("no-partition") is None
    assert lc.source_of("topic|x") is None


def test_pending_counts_add_to_the_stored_tally():
    assert lc.merged({"a": 2}, {"a": 1, "b": 4}) == {"a": 3, "b": 4}
    assert lc.merged(None, {"a": 1}) == {"a": 1}


def test_totals_count_only_the_partitions_this_worker_owns():
    rows = [("f|0", {"a": 2}), ("f|1", {"a": 5, "b": 1}), ("f|2", None), ("junk", {"a": 9})]
    assert lc.totals(rows, {("f", 0), ("f", 2)}, {"b": 3}) == {"a": 2, "b": 3}


class FakeEvent:
    def __init__(self, topic: str, partition: int):
        self.message = SimpleNamespace(topic=topic, partition=partition)


@pytest.fixture
def current(monkeypatch):
    holder: dict[str, FakeEvent | None] = {"event": None}
    monkeypatch.setattr(lc.faust, "current_event", lambda: holder["event"])
    return holder


def test_counts_are_written_under_their_partition_at_most_once_an_interval(current):
    table: dict[str, dict[str, int]] = {}
    clock = [100.0]
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 1)}, send_changelog=Changelog(),
                            flush_interval_s=1.0,
                            clock=lambda: clock[0])
    current["event"] = FakeEvent("f", 1)
    counts.add("received")
    counts.add("dead_lettered")
    assert table == {}  # pending until the record is done
    assert counts.totals() == {"received": 1, "dead_lettered": 1}
    counts.flush()
    assert table == {"f|1": {"received": 1, "dead_lettered": 1}}
    counts.add("received")
    clock[0] += 0.5
    counts.flush()  # too soon: stays pending, and is reported all the same
    assert table == {"f|1": {"received": 1, "dead_lettered": 1}}
    assert counts.totals() == {"received": 2, "dead_lettered": 1}
    clock[0] += 0.5
    counts.flush()
    assert table == {"f|1": {"received": 2, "dead_lettered": 1}}
    assert counts.totals() == {"received": 2, "dead_lettered": 1}


def test_events_outside_a_copartitioned_record_count_in_this_process_only(current):
    table: dict[str, dict[str, int]] = {}
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 0)},
                            send_changelog=Changelog())
    counts.add("escalated")  # a timer: no record
    current["event"] = FakeEvent("scenario-watches", 0)
    counts.add("escalated")
    counts.flush()
    assert table == {}
    assert counts.totals() == {"escalated": 2}


def test_a_tally_restored_from_the_changelog_counts_on(current):
    # What a restarted worker finds in its table, restored from the changelog.
    table = {"f|0": {"poisoned": 7}}
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 0)},
                            send_changelog=Changelog())
    current["event"] = FakeEvent("f", 0)
    counts.add("poisoned")
    counts.flush()
    assert counts.totals() == {"poisoned": 8}


def test_pending_tallies_go_to_the_changelog_when_partitions_are_taken_away(current):
    table = {"f|1": {"received": 4}}
    changelog = Changelog()
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 0), ("f", 1)},
                            send_changelog=changelog, flush_interval_s=60)
    for partition in (0, 1, 1):
        current["event"] = FakeEvent("f", partition)
        counts.add("received")
        counts.flush()  # the first record of a partition is written at once, then 60 s pass
    assert table == {"f|0": {"received": 1}, "f|1": {"received": 5}}
    counts.add("received")
    table.clear()  # the store is closed by now: what was written is remembered
    asyncio.run(counts.write_pending({("f", 1)}))
    assert changelog.sent == [(1, "f|1", {"received": 7})]
    assert ("f", 1) not in counts.written  # it may come back with another worker's counts
    current["event"] = FakeEvent("f", 0)
    counts.add("received")
    asyncio.run(counts.write_pending())  # the worker stops: the rest goes too
    assert changelog.sent[-1] == (0, "f|0", {"received": 2})
    assert counts.pending == {}


def test_a_failed_changelog_send_is_logged_and_the_rest_still_go(current, caplog):
    sent: list[str] = []

    async def flaky(partition: int, key: str, value: dict[str, int]) -> None:
        if partition == 0:
            raise TimeoutError("brokers frozen")
        sent.append(key)

    counts = lc.TableCounts({}, {"f"}, owned=lambda: {("f", 0), ("f", 1)},
                            send_changelog=flaky, flush_interval_s=60)
    for partition in (0, 0, 1, 1):
        current["event"] = FakeEvent("f", partition)
        counts.add("received")
        counts.flush()
    asyncio.run(counts.write_pending())
    assert sent == ["f|1"]
    assert "lifecycle counts of f[0] not saved" in caplog.text
