"""Retry-tier planning: when a parked record wakes, which tier it is parked in next, and the
due tolerance. Pure functions over times given in milliseconds (no clock is read)."""

from __future__ import annotations

import pytest

from app.pipeline.retry.tiers import (
    DUE_TOLERANCE_MS,
    Dispatch,
    Hold,
    Park,
    plan,
    tier_delay_ms,
    wake_at,
)

TIERS = [1_000, 2_000, 4_000, 30_000]
HOLD_MS = 30_000


def test_tier_delays_are_read_from_the_topic_names():
    assert [tier_delay_ms(n) for n in ("recovery.retry.1s", "recovery.retry.250ms",
                                      "recovery.retry.5m")] == [1_000, 250, 300_000]
    assert tier_delay_ms("recovery.retry.1h") is None
    assert tier_delay_ms("recovery.dlq") is None


def test_a_record_due_within_its_tier_wakes_at_its_due_time():
    assert wake_at(enqueued_ms=10_000, tier_ms=2_000, due_ms=11_500) == 11_500


def test_a_record_due_after_its_tier_wakes_at_the_end_of_the_tier_delay():
    assert wake_at(enqueued_ms=10_000, tier_ms=2_000, due_ms=17_000) == 12_000


def test_a_record_already_overdue_wakes_at_once():
    # Enqueued after its due time (the worker was down): its due time is in the past.
    assert wake_at(enqueued_ms=10_000, tier_ms=2_000, due_ms=9_000) == 9_000


def test_not_due_yet_is_parked_in_the_largest_tier_not_past_the_remaining_wait():
    assert plan(due_ms=15_000, now_ms=10_000, consumer_healthy=True, tiers_ms=TIERS,
                hold_ms=HOLD_MS) == Park(tier_ms=4_000, due_ms=15_000)
    assert plan(due_ms=11_999, now_ms=10_000, consumer_healthy=True, tiers_ms=TIERS,
                hold_ms=HOLD_MS) == Park(tier_ms=1_000, due_ms=11_999)


def test_a_wait_shorter_than_every_tier_is_parked_in_the_smallest():
    # 200 ms left: the 1 s tier wakes it at its due time (wake_at), not after 1 s.
    step = plan(due_ms=10_200, now_ms=10_000, consumer_healthy=True, tiers_ms=TIERS,
                hold_ms=HOLD_MS)
    assert step == Park(tier_ms=1_000, due_ms=10_200)
    assert wake_at(10_000, step.tier_ms, step.due_ms) == 10_200


def test_parking_keeps_the_due_time_so_hops_never_postpone_it():
    due, now = 47_000, 10_000
    while isinstance(step := plan(due, now, True, TIERS, HOLD_MS), Park):
        assert step.due_ms == due
        now = wake_at(now, step.tier_ms, step.due_ms)
    assert step == Dispatch() and now == due


@pytest.mark.parametrize("remaining", [DUE_TOLERANCE_MS, 1, 0, -1, -60_000])
def test_due_within_the_tolerance_or_overdue_is_dispatched(remaining):
    assert plan(due_ms=10_000 + remaining, now_ms=10_000, consumer_healthy=True,
                tiers_ms=TIERS, hold_ms=HOLD_MS) == Dispatch()


def test_just_beyond_the_tolerance_is_parked_again():
    assert plan(due_ms=10_000 + DUE_TOLERANCE_MS + 1, now_ms=10_000, consumer_healthy=True,
                tiers_ms=TIERS, hold_ms=HOLD_MS) == Park(1_000, 10_000 + DUE_TOLERANCE_MS + 1)


def test_due_for_an_unhealthy_consumer_is_held_for_the_hold_period():
    assert plan(due_ms=10_000, now_ms=10_003, consumer_healthy=False, tiers_ms=TIERS,
                hold_ms=HOLD_MS) == Hold(tier_ms=30_000, due_ms=40_003)
    assert plan(due_ms=10_000, now_ms=10_000, consumer_healthy=False, tiers_ms=TIERS,
                hold_ms=2_000) == Hold(tier_ms=2_000, due_ms=12_000)


def test_not_due_for_an_unhealthy_consumer_is_parked_not_held():
    # Health is only judged once the record is due.
    assert plan(due_ms=14_000, now_ms=10_000, consumer_healthy=False, tiers_ms=TIERS,
                hold_ms=HOLD_MS) == Park(4_000, 14_000)
