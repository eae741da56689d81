"""Context headers around unusual original headers: binary values, None values, duplicate
keys and a service's own headers under `recovery.*` are kept as they were, in order."""

from __future__ import annotations

from app.contracts import headers as h

UNUSUAL = [
    ("trace", b"t1"),
    ("blob", bytes(range(256))),          # binary, not UTF-8
    ("empty", None),                      # a header without a value
    ("trace", b"t2"),                     # the same key twice
    ("recovery.user.note", b"mine"),      # the service's own header in our namespace
    ("", b"nameless"),
]


def test_original_headers_are_kept_byte_for_byte_in_order_before_the_context():
    out = h.with_context(UNUSUAL, {h.ATTEMPT: 2, h.INCIDENT_ID: "inc-1"})
    assert out == [*UNUSUAL, (h.ATTEMPT, b"2"), (h.INCIDENT_ID, b"inc-1")]


def test_a_none_context_value_keeps_an_original_header_of_that_name():
    original = [("a", b"1"), (h.ERROR_STACKTRACE, b"earlier hop's trace"), ("b", None)]
    out = h.with_context(original, {h.ERROR_STACKTRACE: None, h.ATTEMPT: 1})
    assert out == [*original, (h.ATTEMPT, b"1")]


def test_a_context_value_replaces_every_earlier_header_of_that_name():
    original = [(h.ATTEMPT, b"1"), ("a", b"x"), (h.ATTEMPT, b"1")]
    out = h.with_context(original, {h.ATTEMPT: 2})
    assert out == [("a", b"x"), (h.ATTEMPT, b"2")]


def test_repeated_hops_keep_one_current_context_set():
    hops = UNUSUAL
    for attempt in (1, 2, 3):
        hops = h.with_context(hops, {h.ATTEMPT: attempt, h.ERROR_TYPE: "timeout",
                                     h.ERROR_STACKTRACE: None})
    assert hops == [*UNUSUAL, (h.ATTEMPT, b"3"), (h.ERROR_TYPE, b"timeout")]


def test_context_values_are_encoded_and_bytes_kept():
    out = h.with_context([], {h.ORIGINAL_KEY: b"\xff\x00", h.ORIGINAL_OFFSET: 0,
                              h.REASON: "r\u00e9ason"})
    assert out == [(h.ORIGINAL_KEY, b"\xff\x00"), (h.ORIGINAL_OFFSET, b"0"),
                   (h.REASON, "r\u00e9ason".encode())]


def test_without_drops_only_the_named_keys_and_keeps_duplicates():
    assert h.without(UNUSUAL, ["blob", "missing"]) == [
        kv for kv in UNUSUAL if kv[0] != "blob"]


def test_header_lookups_take_the_last_value_and_tolerate_none_and_binary():
    assert h.header_bytes(UNUSUAL, "trace") == b"t2"
    assert h.header_bytes(UNUSUAL, "empty") is None
    assert h.header_value(UNUSUAL, "blob") == bytes(range(256)).decode(errors="replace")
    assert h.header_value(None, "trace") is None
    assert h.header_int([(h.ATTEMPT, b"x")], h.ATTEMPT) is None
    assert h.header_int([(h.ATTEMPT, b"1"), (h.ATTEMPT, b"4")], h.ATTEMPT) == 4


def test_normalize_keeps_duplicates_from_a_list_and_none_values_from_a_mapping():
    assert h.normalize(UNUSUAL) == UNUSUAL
    assert h.normalize({"a": None, "b": b"1"}) == [("a", None), ("b", b"1")]
    assert h.normalize(None) == []
