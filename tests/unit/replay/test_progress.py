"""Replay progress as data: fingerprints, start offsets, counts and resumption."""

from __future__ import annotations

import pytest

from app.replay.progress import (
    DONE,
    RUNNING,
    Progress,
    ProgressMismatch,
    default_name,
    fingerprint,
    resumable,
    start,
)


def test_fingerprint_ignores_order_of_options_and_of_repeated_values() -> None:
    a = fingerprint({"group": ["a", "b"], "since": "-2h", "to": "original"})
    b = fingerprint({"to": "original", "since": "-2h", "group": ["b", "a"]})
    assert a == b
    assert a != fingerprint({"group": ["a"], "since": "-2h", "to": "original"})
    assert default_name(a) == "replay-" + a[:12]


def test_start_reads_from_the_low_watermark_or_the_seek_offset_to_the_high_one() -> None:
    progress = start("r", "fp", {}, "dlq", low={0: 5, 1: 0, 2: 0}, high={0: 10, 1: 8, 2: 3},
                     seek={0: 2, 1: 6, 2: 3}, now_ms=1)
    assert progress.next == {0: 5, 1: 6, 2: 3}
    assert progress.end == {0: 10, 1: 8, 2: 3}
    assert progress.to_read() == {0: 5, 1: 6}
    assert progress.remaining == 7 and progress.total == 7


def test_advanced_moves_offsets_and_adds_counts() -> None:
    progress = start("r", "fp", {}, "dlq", low={0: 0, 1: 0}, high={0: 10, 1: 10}, now_ms=1)
    once = progress.advanced({0: 4}, scanned=4, matched=3, sent=2, unroutable=1, not_sent=0,
                             state=RUNNING, now_ms=2)
    twice = once.advanced({0: 10, 1: 3}, scanned=9, matched=1, sent=1, unroutable=0,
                          not_sent=0, state=DONE, now_ms=3)
    assert (once.next, once.scanned, once.sent, once.remaining) == ({0: 4, 1: 0}, 4, 2, 16)
    assert twice.next == {0: 10, 1: 3}
    assert (twice.scanned, twice.matched, twice.sent, twice.unroutable) == (13, 4, 3, 1)
    assert twice.total == 13 + 7 and twice.state == DONE and twice.updated_ms == 3


def test_progress_survives_json() -> None:
    progress = start("r", "fp", {"group": ["a"]}, "dlq", low={0: 0, 7: 1}, high={0: 3, 7: 9},
                     since_ms=5, until_ms=None, now_ms=1).advanced(
        {7: 4}, scanned=3, matched=2, sent=2, unroutable=0, not_sent=0, state=RUNNING, now_ms=2)
    assert Progress.from_json(progress.to_json()) == progress


def test_resumable_goes_on_only_with_the_same_options() -> None:
    stored = start("r", "fp-1", {"group": ["a"]}, "dlq", low={0: 0}, high={0: 1}, now_ms=1)
    assert resumable(None, "r", "fp-1") is None
    assert resumable(stored, "r", "fp-1") is stored
    with pytest.raises(ProgressMismatch, match="'r' was started with other options "
                                               r"\(group=a\).*--name or --restart"):
        resumable(stored, "r", "fp-2")
