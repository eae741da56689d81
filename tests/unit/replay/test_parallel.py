"""Sharing a replay among worker processes: how many, who reads what, and the merged
progress (the processes themselves: tests/integration/test_replay.py)."""

from __future__ import annotations

from app.replay.parallel import AUTO_MIN_RECORDS, auto_workers, merged, portion, share
from app.replay.progress import DONE, RUNNING, start


def test_auto_workers_is_one_per_partition_with_records_for_large_replays_only() -> None:
    big = {0: AUTO_MIN_RECORDS, 1: AUTO_MIN_RECORDS, 2: 0}
    assert auto_workers(big, 2, rate=None, dry_run=False) == 2
    assert auto_workers({p: AUTO_MIN_RECORDS for p in range(12)}, 8, rate=None,
                        dry_run=False) == 4
    assert auto_workers({0: 10, 1: 10}, 2, rate=None, dry_run=False) == 1  # small
    assert auto_workers(big, 2, rate=100.0, dry_run=False) == 1  # rate-limited
    assert auto_workers(big, 2, rate=None, dry_run=True) == 1
    assert auto_workers(big, 1, rate=None, dry_run=False) == 1  # one CPU


def test_share_balances_records_and_skips_finished_partitions() -> None:
    shares = share({0: 100, 1: 60, 2: 50, 3: 0, 4: 10}, 2)
    assert shares == [[0, 4], [1, 2]]  # 110 records each
    assert share({0: 5}, 3) == [[0]]
    assert share({}, 2) == []


def test_portions_merge_back_into_the_whole_replay() -> None:
    whole = start("r", "fp", {}, "dlq", low={0: 0, 1: 0, 2: 0}, high={0: 10, 1: 20, 2: 5},
                  now_ms=1)
    whole = whole.advanced({}, scanned=7, matched=7, sent=7, unroutable=0, not_sent=0,
                           state=RUNNING, now_ms=2)  # a run before this one
    a, b = portion(whole, [0, 2]), portion(whole, [1])
    assert (a.end, a.sent, b.next) == ({0: 10, 2: 5}, 0, {1: 0})
    a = a.advanced({0: 10, 2: 5}, scanned=15, matched=15, sent=14, unroutable=1,
                   not_sent=0, state=DONE, now_ms=3)
    b = b.advanced({1: 8}, scanned=8, matched=8, sent=8, unroutable=0, not_sent=0,
                   state=RUNNING, now_ms=3)
    total = merged(whole, {0: a, 1: b}, RUNNING, 4)
    assert total.next == {0: 10, 1: 8, 2: 5}
    assert (total.scanned, total.sent, total.unroutable) == (30, 29, 1)
    assert total.remaining == 12 and total.end == whole.end
