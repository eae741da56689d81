"""Dead-letter selection: time and header parsing, and each filter of the predicate."""

from __future__ import annotations

import pytest

from app.contracts import headers as h
from app.replay.selection import (
    SelectionError,
    build_selection,
    compile_selection,
    describe,
    parse_header,
    parse_time,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("-2h", NOW - 2 * 3_600_000),
    ("-30m", NOW - 30 * 60_000),
    ("-45s", NOW - 45_000),
    ("-1d", NOW - 86_400_000),
    ("-1w", NOW - 7 * 86_400_000),
    ("-1h30m", NOW - 90 * 60_000),
    ("2023-11-14T22:13:20Z", NOW),
    ("2023-11-14T23:13:20+01:00", NOW),
    ("2023-11-14T22:13:20", NOW),  # no zone: UTC
    ("2023-11-14", NOW - (22 * 3600 + 13 * 60 + 20) * 1000),
    (" -5m ", NOW - 300_000),
])
def test_parse_time_accepts_iso_8601_and_relative_times(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-2x", "2h", "--2h", "2023-13-01", "", "-h"])
def test_parse_time_rejects_anything_else_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(SelectionError, match="bad time .*ISO-8601.*-2h"):
        parse_time(text, NOW)


@pytest.mark.parametrize(("text", "expected"), [
    ("trace=abc", ("trace", "abc")),
    ("trace=", ("trace", "")),
    ("q=a=b", ("q", "a=b")),
    (" name =v", ("name", "v")),
])
def test_parse_header_splits_at_the_first_equals_sign(text: str, expected: tuple) -> None:
    assert parse_header(text) == expected


@pytest.mark.parametrize("text", ["trace", "=abc", ""])
def test_parse_header_needs_a_name_and_an_equals_sign(text: str) -> None:
    with pytest.raises(SelectionError, match="NAME=VALUE"):
        parse_header(text)


def test_an_empty_time_range_is_refused() -> None:
    with pytest.raises(SelectionError, match="empty time range"):
        build_selection(since="-1h", until="-2h", now_ms=NOW)


def test_no_filter_selects_everything_without_a_predicate() -> None:
    selection = build_selection(now_ms=NOW)
    assert selection.everything
    assert compile_selection(selection) is None
    assert describe(selection) == "every dead letter"


def dead_letter(topic="orders", group="billing", error="timeout", **extra: bytes) -> dict:
    return {h.ORIGINAL_TOPIC: topic.encode(), h.CONSUMER_GROUP: group.encode(),
            h.ERROR_TYPE: error.encode(), **extra}


def selects(key: bytes | None = b"k", hs: dict | None = None, ts: int = NOW, **filters) -> bool:
    predicate = compile_selection(build_selection(now_ms=NOW, **filters))
    assert predicate is not None
    return predicate(key, dead_letter() if hs is None else hs, ts)


def test_topic_filter_matches_the_original_topic_header() -> None:
    assert selects(topics=["orders"])
    assert not selects(topics=["payments"])
    assert selects(topics=["payments", "orders"])  # alternatives
    assert not selects(topics=["orders"], hs={})  # no header: not selected


def test_group_filter_matches_the_consumer_group_header() -> None:
    assert selects(groups=["billing"])
    assert not selects(groups=["shipping"])


def test_error_type_filter_matches_the_error_type_header() -> None:
    assert selects(error_types=["timeout", "bad_payload"])
    assert not selects(error_types=["bad_payload"])


def test_key_filter_compares_the_record_key_bytes() -> None:
    assert selects(key=b"order-7", keys=["order-7"])
    assert not selects(key=b"order-8", keys=["order-7"])
    assert not selects(key=None, keys=["order-7"])


def test_header_filter_compares_a_header_value_and_all_must_hold() -> None:
    hs = dead_letter(trace=b"abc", region=b"eu")
    assert selects(hs=hs, headers=["trace=abc"])
    assert selects(hs=hs, headers=["trace=abc", "region=eu"])
    assert not selects(hs=hs, headers=["trace=abc", "region=us"])
    assert not selects(hs=hs, headers=["missing=x"])


def test_header_filter_sees_the_last_value_of_a_repeated_header() -> None:
    # the predicate gets dict(headers): a later hop's value wins, as in header_value
    repeated = [(h.ERROR_TYPE, b"timeout"), (h.ERROR_TYPE, b"bad_payload")]
    assert h.header_value(repeated, h.ERROR_TYPE) == "bad_payload"
    assert selects(hs=dict(repeated), error_types=["bad_payload"])
    assert not selects(hs=dict(repeated), error_types=["timeout"])


def test_time_range_is_since_inclusive_until_exclusive_on_the_dead_letter_timestamp() -> None:
    since, until = "2023-11-14T22:00:00Z", "2023-11-14T23:00:00Z"
    start, end = parse_time(since, NOW), parse_time(until, NOW)
    assert selects(ts=start, since=since, until=until)
    assert selects(ts=end - 1, since=since, until=until)
    assert not selects(ts=start - 1, since=since, until=until)
    assert not selects(ts=end, since=since, until=until)
    assert selects(ts=NOW - 60_000, since="-2m")
    assert not selects(ts=NOW - 180_000, since="-2m")


def test_different_filters_must_all_hold() -> None:
    assert selects(topics=["orders"], groups=["billing"], error_types=["timeout"])
    assert not selects(topics=["orders"], groups=["shipping"], error_types=["timeout"])


def test_describe_names_every_filter() -> None:
    selection = build_selection(topics=["orders"], groups=["b", "a"], keys=["k1"],
                                headers=["trace=abc"], since="2023-11-14T22:00:00Z",
                                now_ms=NOW)
    assert describe(selection) == ("topic orders, group a|b, key k1, header trace=abc, "
                                   "since 2023-11-14T22:00:00Z")
