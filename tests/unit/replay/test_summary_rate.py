"""The dry-run table and the rate limit."""

from __future__ import annotations

from collections import Counter

from app.contracts import headers as h
from app.replay import rate
from app.replay.summary import row_of, table


def test_row_names_topic_group_error_type_and_target() -> None:
    hs = {h.ORIGINAL_TOPIC: b"orders", h.CONSUMER_GROUP: b"billing", h.ERROR_TYPE: b"timeout"}
    assert row_of(hs, "orders") == ("orders", "billing", "timeout", "orders")
    assert row_of({}, None) == ("-", "-", "-", "(unroutable)")


def test_table_lists_rows_by_count_with_a_total_and_marks_missing_targets() -> None:
    counts = Counter({("orders", "billing", "timeout", "billing.redelivery"): 3,
                      ("payments", "shipping", "bad_payload", "shipping.redelivery"): 12})
    lines = table(counts, frozenset({"shipping.redelivery"}))
    assert lines[0].split() == ["original", "topic", "consumer", "group", "error", "type",
                                "target", "records"]
    assert lines[2].split() == ["payments", "shipping", "bad_payload",
                                "shipping.redelivery", "(missing)", "12"]
    assert lines[3].split() == ["orders", "billing", "timeout", "billing.redelivery", "3"]
    assert lines[-1].split() == ["total", "15"]
    assert len({len(line) for line in lines[:4]}) == 1  # aligned columns


def test_rate_limit_waits_until_sent_records_took_their_time() -> None:
    assert rate.wait_s(100, 0.5, 100.0) == 0.5
    assert rate.wait_s(100, 2.0, 100.0) == 0.0
    assert rate.wait_s(10**6, 0.1, None) == 0.0


def test_batches_under_a_rate_limit_are_a_tenth_of_a_second_worth() -> None:
    assert rate.batch_size(None) == rate.MAX_BATCH
    assert rate.batch_size(500) == 50
    assert rate.batch_size(3) == 1
    assert rate.batch_size(10**7) == rate.MAX_BATCH
