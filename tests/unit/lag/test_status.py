"""Each status rule of app/lag/status.py on its own, then the order they apply in."""

from app.lag.status import (
    Sample,
    Status,
    consumer_stopped,
    group_status,
    lag_not_decreasing,
    lag_was_zero,
    offsets_rewound,
    offsets_stalled,
    partition_status,
)


def window(*pairs: tuple[int, int]) -> list[Sample]:
    """(committed, end) pairs, one sample every 10 s."""
    return [Sample(i * 10_000, committed, end) for i, (committed, end) in enumerate(pairs)]


# ---- rule 1: OK when the lag was zero somewhere in the window --------------------------

def test_rule1_lag_zero_at_some_sample_is_ok_even_when_it_grows_now():
    w = window((10, 10), (10, 20), (10, 30))
    assert lag_was_zero(w)
    assert partition_status(w, group_active=True) is Status.OK


def test_rule1_does_not_hold_when_the_lag_was_never_zero():
    assert not lag_was_zero(window((5, 10), (10, 20)))


# ---- rule 2: REWIND ---------------------------------------------------------------------

def test_rule2_committed_offset_going_down_is_a_rewind():
    w = window((50, 100), (20, 100), (30, 100))
    assert offsets_rewound(w)
    assert partition_status(w, group_active=True) is Status.REWIND


def test_rule2_offsets_that_only_go_up_are_no_rewind():
    assert not offsets_rewound(window((10, 100), (10, 100), (30, 100)))


# ---- rule 3: STOP -----------------------------------------------------------------------

def test_rule3_lag_and_no_active_member_is_stop():
    w = window((10, 100), (10, 100))
    assert consumer_stopped(w, group_active=False)
    assert partition_status(w, group_active=False) is Status.STOP


def test_rule3_needs_lag_and_an_empty_group():
    assert not consumer_stopped(window((10, 100)), group_active=True)
    assert not consumer_stopped(window((100, 100)), group_active=False)


# ---- rule 4: STALL ----------------------------------------------------------------------

def test_rule4_same_offset_over_a_full_window_with_members_is_stall():
    w = window((10, 100), (10, 110), (10, 120))
    assert offsets_stalled(w, min_samples=3)
    assert partition_status(w, group_active=True, min_samples=3) is Status.STALL


def test_rule4_needs_a_full_window_and_an_unmoving_offset():
    assert not offsets_stalled(window((10, 100), (10, 110)), min_samples=3)
    assert not offsets_stalled(window((10, 100), (11, 110), (11, 120)), min_samples=3)
    assert partition_status(window((10, 100), (10, 110)), group_active=True,
                            min_samples=3) is Status.OK


# ---- rule 5: WARN -----------------------------------------------------------------------

def test_rule5_moving_offsets_with_lag_never_decreasing_is_warn():
    w = window((10, 100), (20, 120), (30, 140), (40, 150))
    assert lag_not_decreasing(w, min_samples=3)
    assert partition_status(w, group_active=True, min_samples=3) is Status.WARN


def test_rule5_one_decrease_in_the_window_clears_the_warning():
    w = window((10, 100), (20, 120), (60, 140), (70, 170))
    assert not lag_not_decreasing(w, min_samples=3)
    assert partition_status(w, group_active=True, min_samples=3) is Status.OK


# ---- rule 6 and the order ----------------------------------------------------------------

def test_rule6_a_consumer_catching_up_is_ok():
    w = window((10, 100), (50, 110), (90, 120))
    assert partition_status(w, group_active=True) is Status.OK


def test_rewind_is_judged_before_stop():
    assert partition_status(window((50, 100), (20, 100)), group_active=False) is Status.REWIND


def test_stop_is_judged_before_stall():
    w = window((10, 100), (10, 100), (10, 100))
    assert partition_status(w, group_active=False) is Status.STOP
    assert partition_status(w, group_active=True) is Status.STALL


# ---- group rules -------------------------------------------------------------------------

def test_group_g1_all_ok_or_no_partition_is_ok():
    assert group_status([]) is Status.OK
    assert group_status([Status.OK, Status.OK]) is Status.OK


def test_group_g2_one_kind_of_error_names_it():
    assert group_status([Status.OK, Status.STALL, Status.WARN, Status.STALL]) is Status.STALL
    assert group_status([Status.STOP]) is Status.STOP
    assert group_status([Status.OK, Status.REWIND]) is Status.REWIND


def test_group_g3_errors_of_several_kinds_are_err():
    assert group_status([Status.STOP, Status.STALL, Status.OK]) is Status.ERR


def test_group_g4_warnings_without_errors_are_warn():
    assert group_status([Status.OK, Status.WARN]) is Status.WARN


def test_status_codes_are_distinct_for_the_gauge():
    assert sorted(s.code for s in Status) == list(range(6))
