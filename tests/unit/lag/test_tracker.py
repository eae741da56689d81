"""Snapshots through the tracker: offsets, lag, time lag, status per partition and group."""

from app.lag.collect import GroupOffsets, Snapshot, matches, parse_patterns
from app.lag.status import Status
from app.lag.tracker import LagTracker


def snap(at_ms: int, committed: dict, ends: dict, *, active: bool = True,
         group: str = "billing") -> Snapshot:
    return Snapshot(at_ms, {group: GroupOffsets(group, "STABLE" if active else "EMPTY",
                                                active, committed)}, ends)


def test_lag_time_lag_and_status_of_a_consumer_falling_behind():
    tracker = LagTracker(window=5, min_samples=3)
    for i in range(4):
        view = tracker.observe(snap(i * 10_000, {("orders", 0): 10 * i},
                                    {("orders", 0): 100 + 50 * i}))
    [group] = view.groups
    [row] = group.partitions
    assert (row.committed, row.end, row.lag) == (30, 250, 220)
    # the end was at 30 before the window began: extrapolated along 5 records/s
    assert row.time_lag_s is not None and row.time_lag_s > 30
    assert row.status is Status.WARN and group.status is Status.WARN
    assert group.total_lag == 220
    assert [total for _, total in tracker.history["billing"]] == [100, 140, 180, 220]


def test_an_empty_group_with_lag_is_stopped():
    tracker = LagTracker()
    view = tracker.observe(snap(0, {("orders", 0): 3, ("orders", 1): 7},
                                {("orders", 0): 10, ("orders", 1): 7}, active=False))
    group = view.group("billing")
    assert [r.lag for r in group.partitions] == [7, 0]
    assert [r.status for r in group.partitions] == [Status.STOP, Status.OK]
    assert group.status is Status.STOP


def test_partitions_without_an_end_offset_are_shown_without_lag():
    view = LagTracker().observe(snap(0, {("gone", 0): 5}, {}))
    [row] = view.groups[0].partitions
    assert row.end is None and row.lag is None and row.status is Status.OK


def test_groups_that_disappear_are_forgotten():
    tracker = LagTracker()
    tracker.observe(snap(0, {("orders", 0): 1}, {("orders", 0): 5}))
    tracker.observe(Snapshot(10_000, {}, {}))
    assert not tracker.samples and not tracker.history and not tracker.end_tables


def test_group_patterns_are_globs_and_empty_means_every_group():
    patterns = parse_patterns("billing*, ledger")
    assert patterns == ["billing*", "ledger"]
    assert matches("billing-eu", patterns) and matches("ledger", patterns)
    assert not matches("ledger-2", patterns)
    assert matches("anything", [])


def test_group_time_lag_is_the_worst_partitions_and_unknown_when_a_lagging_one_is():
    tracker = LagTracker()
    tracker.observe(snap(0, {("orders", 0): 0, ("orders", 1): 5},
                         {("orders", 0): 100, ("orders", 1): 5}))
    view = tracker.observe(snap(10_000, {("orders", 0): 0, ("orders", 1): 5},
                                {("orders", 0): 200, ("orders", 1): 5}))
    group = view.group("billing")
    # partition 0 lags: the end was at 0 ten seconds before the first point
    assert group.max_time_lag_s == 20.0
    idle = tracker.observe(snap(20_000, {("orders", 0): 0, ("orders", 1): 2},
                                {("orders", 0): 200, ("orders", 1): 5}))
    # partition 1 went back (a rewind) on an idle log: its time lag cannot be estimated
    assert idle.group("billing").partitions[1].time_lag_s is None
    assert idle.group("billing").max_time_lag_s is None
