"""Time lag from a window of (time, end offset) points (app/lag/timelag.py)."""

import pytest

from app.lag.timelag import EndOffsetTable


def table(*points: tuple[int, int], limit: int = 10) -> EndOffsetTable:
    t = EndOffsetTable(limit)
    for at_ms, offset in points:
        t.add(at_ms, offset)
    return t


def test_interpolates_between_the_two_points_around_the_committed_offset():
    t = table((0, 0), (10_000, 100), (20_000, 300))
    # the end was at 200 halfway between 10 s and 20 s
    assert t.time_of(200) == pytest.approx(15_000)
    assert t.lag_seconds(200, now_ms=20_000) == pytest.approx(5.0)


def test_extrapolates_along_the_window_for_an_offset_older_than_the_window():
    t = table((10_000, 100), (20_000, 200))
    assert t.time_of(50) == pytest.approx(5_000)
    assert t.lag_seconds(50, now_ms=20_000) == pytest.approx(15.0)


def test_a_group_at_the_end_has_no_time_lag():
    t = table((0, 0), (10_000, 100))
    assert t.lag_seconds(100, now_ms=99_000) == 0.0


def test_no_estimate_from_a_single_point_or_a_flat_line():
    assert table((0, 100)).lag_seconds(50, now_ms=1000) is None
    assert table((0, 100), (10_000, 100)).lag_seconds(50, now_ms=20_000) is None


def test_flat_stretches_keep_one_segment_and_move_its_end():
    t = table((0, 0), (10_000, 100), (20_000, 100), (30_000, 100), (40_000, 100))
    assert [(p.at_ms, p.offset) for p in t.points] == [(0, 0), (10_000, 100), (40_000, 100)]


def test_out_of_order_and_decreasing_points_are_ignored():
    t = table((10_000, 100), (5_000, 120), (20_000, 50), (30_000, 200))
    assert [(p.at_ms, p.offset) for p in t.points] == [(10_000, 100), (30_000, 200)]


def test_the_window_slides():
    t = table(*[(i * 1000, i * 10) for i in range(20)], limit=5)
    assert len(t.points) == 5 and t.points[0].offset == 150
