"""Where a replayed dead letter goes, and the headers it carries."""

from __future__ import annotations

import pytest

from app.contracts import headers as h
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


def test_replayed_headers_are_the_dead_letters_own_plus_the_replay_id_last() -> None:
    dead = [("trace", b"abc"), (h.ORIGINAL_TOPIC, b"orders"), ("empty", None),
            (h.INCIDENT_ID, b"inc-1"), (h.REPLAY_ID, b"0:1"), ("trace", b"def")]
    replayed = replayed_headers(dead, 1, 99)
    assert replayed == [*dead, (h.REPLAY_ID, b"1:99")]
    # an earlier replay id stays, but the new one is what the client API reads
    assert h.header_value(replayed, h.REPLAY_ID) == "1:99"
    assert len(dead) == 6  # the dead letter's own list is not changed
