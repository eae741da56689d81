"""Lifecycle-event counts by input partition (app/lifecycle_counts.py): keys, tallies, and
which partitions a worker reports."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app import lifecycle_counts as lc


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


def test_counts_are_written_once_per_record_under_its_partition(current):
    table: dict[str, dict[str, int]] = {}
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 1)})
    current["event"] = FakeEvent("f", 1)
    counts.add("received")
    counts.add("dead_lettered")
    assert table == {}  # pending until the record is done
    assert counts.totals() == {"received": 1, "dead_lettered": 1}
    counts.flush()
    counts.add("received")
    counts.flush()
    assert table == {"f|1": {"received": 2, "dead_lettered": 1}}
    assert counts.totals() == {"received": 2, "dead_lettered": 1}


def test_events_outside_a_copartitioned_record_count_in_this_process_only(current):
    table: dict[str, dict[str, int]] = {}
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 0)})
    counts.add("escalated")  # a timer: no record
    current["event"] = FakeEvent("scenario-watches", 0)
    counts.add("escalated")
    counts.flush()
    assert table == {}
    assert counts.totals() == {"escalated": 2}


def test_a_tally_restored_from_the_changelog_counts_on(current):
    # What a restarted worker finds in its table, restored from the changelog.
    table = {"f|0": {"poisoned": 7}}
    counts = lc.TableCounts(table, {"f"}, owned=lambda: {("f", 0)})
    current["event"] = FakeEvent("f", 0)
    counts.add("poisoned")
    counts.flush()
    assert counts.totals() == {"poisoned": 8}
