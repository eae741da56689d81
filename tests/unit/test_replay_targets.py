"""Where a replayed dead letter goes, and the headers it carries."""

from __future__ import annotations

import pytest

from app import headers as h
from app.replay.targets import (
    ORIGINAL,
    REDELIVERY,
    TOPIC,
    Target,
    replay_id,
    replayed_headers,
    resolver,
)


def test_original_target_is_the_original_topic_header() -> None:
    resolve = resolver(Target(ORIGINAL))
    assert resolve({h.ORIGINAL_TOPIC: b"orders"}) == "orders"
    assert resolve({h.CONSUMER_GROUP: b"billing"}) is None


def test_redelivery_target_is_the_dispatch_target_else_the_groups_redelivery_topic() -> None:
    resolve = resolver(Target(REDELIVERY))
    assert resolve({h.CONSUMER_GROUP: b"billing"}) == "billing.redelivery"
    assert resolve({h.CONSUMER_GROUP: b"billing",
                    h.DISPATCH_TARGET: b"billing-v2.redelivery"}) == "billing-v2.redelivery"
    assert resolve({h.ORIGINAL_TOPIC: b"orders"}) is None


def test_named_target_takes_every_record() -> None:
    assert resolver(Target(TOPIC, "audit.replays"))({}) == "audit.replays"
    with pytest.raises(ValueError):
        resolver(Target(TOPIC))


def test_replay_id_has_the_form_of_the_workers_automatic_replay() -> None:
    # app/worker.py replay_dead_letters: f"{dead.partition}:{dead.offset}"
    assert replay_id(2, 4711) == b"2:4711"


def test_replayed_headers_keep_the_originals_in_order_and_add_the_replay_id_last() -> None:
    dead = [("trace", b"abc"), (h.ORIGINAL_TOPIC, b"orders"), ("empty", None),
            (h.INCIDENT_ID, b"inc-1"), (h.DISPATCH_TARGET, b"x.redelivery"),
            (h.REPLAY_ID, b"0:1"), (h.HELD, b"1"), (h.COMMAND, b"replay"),
            (h.ORIGINAL_KEY, b"k"), ("trace", b"def")]
    assert replayed_headers(dead, 1, 99) == [
        ("trace", b"abc"), (h.ORIGINAL_TOPIC, b"orders"), ("empty", None),
        (h.INCIDENT_ID, b"inc-1"), ("trace", b"def"), (h.REPLAY_ID, b"1:99")]
    assert h.header_value(replayed_headers(dead, 1, 99), h.REPLAY_ID) == "1:99"
    assert dead[5] == (h.REPLAY_ID, b"0:1")  # the dead letter's own list is not changed
