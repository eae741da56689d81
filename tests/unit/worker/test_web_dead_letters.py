"""The console's pure parts: the page cursor, filters from query parameters (the replay
command's selection), value rendering, the replay form, and the CSRF field and role rule."""

from __future__ import annotations

import json

import pytest
from multidict import MultiDict

from app.contracts import headers as h
from app.replay import progress as pg
from app.replay.targets import INCIDENT, ORIGINAL, REDELIVERY, TOPIC, Target, replay_command
from app.settings import Settings
from app.worker.web import dead_letters as dl
from app.worker.web import replays as rp
from app.worker.web.dead_letters import Record
from app.worker.web.page import csrf_field, layout, may_operate
from app.worker.web.records import hex_dump, incident_link, record_data, render_value

NOW = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def test_cursor_round_trips_and_rejects_anything_else():
    positions = {0: 17, 2: 5, 11: 0}
    assert dl.encode_cursor(positions) == "0:17,2:5,11:0"
    assert dl.decode_cursor(dl.encode_cursor(positions)) == positions
    for bad in ("", "x", "0:", ":5", "0:-1", "0:1,0:2", "a:b", "0:1;1:2"):
        with pytest.raises(dl.BadRequest):
            dl.decode_cursor(bad)


def test_query_parameters_become_the_replay_commands_selection():
    query = dl.parse_query(MultiDict([
        ("topic", "orders"), ("group", "billing"), ("group", "shipping"), ("error_type", ""),
        ("key", "k1"), ("since", "-2h"), ("until", "now"), ("order", "oldest"),
        ("limit", "10"), ("cursor", "0:4")]), NOW)
    s = query.selection
    assert s.topics == {"orders"} and s.groups == {"billing", "shipping"}
    assert s.error_types == frozenset()  # an empty form field is no filter
    assert s.keys == {b"k1"} and s.since_ms == NOW - 7_200_000 and s.until_ms == NOW
    assert (query.order, query.limit, query.cursor) == ("oldest", 10, {0: 4})
    predicate = query.predicate
    assert predicate is not None
    hs = {h.ORIGINAL_TOPIC: b"orders", h.CONSUMER_GROUP: b"shipping"}
    assert predicate(b"k1", hs, NOW - 1000)
    assert not predicate(b"k2", hs, NOW - 1000)
    assert not predicate(b"k1", hs, NOW - 3 * 3_600_000)
    assert not predicate(b"k1", {**hs, h.CONSUMER_GROUP: b"other"}, NOW - 1000)
    everything = dl.parse_query({}, NOW)
    assert everything.predicate is None and everything.order == dl.NEWEST
    assert everything.limit == dl.DEFAULT_LIMIT and everything.cursor is None


@pytest.mark.parametrize("params, message", [
    ({"since": "last tuesday"}, "bad time"),
    ({"since": "-1h", "until": "-2h"}, "empty time range"),
    ({"order": "sideways"}, "bad order"),
    ({"limit": "0"}, "bad limit"),
    ({"limit": "5000"}, "bad limit"),
    ({"limit": "ten"}, "bad limit"),
    ({"cursor": "nope"}, "bad cursor"),
])
def test_bad_query_parameters_are_refused_with_a_plain_message(params, message):
    with pytest.raises(dl.BadRequest, match=message):
        dl.parse_query(params, NOW)


def test_record_positions_are_digits():
    assert dl.parse_position("2", "17") == (2, 17)
    for partition, offset in (("-1", "0"), ("a", "1"), ("0", "1.5"), ("0", "")):
        with pytest.raises(dl.BadRequest):
            dl.parse_position(partition, offset)


def test_values_show_as_json_pretty_printed_text_or_hex():
    as_json = render_value(json.dumps({"b": [1, 2], "a": "é"}).encode())
    assert as_json.kind == "json"
    assert as_json.text == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "é"\n}'
    assert render_value(b"plain words\nand a line").kind == "text"
    assert render_value(b"42").kind == "text"  # JSON, but a scalar: shown as it is
    assert render_value(b"{not json").kind == "text"
    binary = render_value(bytes([0xff, 0x00, 0x41]))
    assert binary.kind == "hex" and binary.text.startswith("00000000  ff 00 41")
    assert binary.text.endswith("..A")
    assert render_value(b"bell\x07").kind == "hex"  # UTF-8, but not printable
    assert render_value(None).kind == "null" and render_value(b"").kind == "empty"
    cut = render_value(b"x" * 100, limit=10)
    assert cut.truncated and cut.size == 100 and cut.text == "x" * 10
    assert hex_dump(bytes(range(20))).count("\n") == 1


def test_record_data_keeps_every_header_in_order_and_links_the_incident():
    headers = [("trace", b"t1"), ("trace", b"t2"), ("blob", b"\xff"), ("none", None),
               (h.REASON, b"retries exhausted"), (h.INCIDENT_ID, b"g:orders/0:17")]
    data = record_data(Record("dlq", 1, 9, NOW, b"k", b'{"x": 1}', headers))
    assert [(x["name"], x["kind"]) for x in data["headers"]] == [
        ("trace", "text"), ("trace", "text"), ("blob", "hex"), ("none", "null"),
        (h.REASON, "text"), (h.INCIDENT_ID, "text")]
    assert data["reason"] == "retries exhausted" and data["value"]["kind"] == "json"
    assert data["incident_url"] == "/incidents/g%3Aorders%2F0%3A17" == incident_link(
        "g:orders/0:17")
    assert data["replay_id"] == "1:9"


SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="p.")


def test_the_replay_form_names_the_same_replay_as_the_command_line():
    request = rp.parse_request(MultiDict([("source", "dead-letters"), ("group", "billing"),
                                          ("to", "redelivery"), ("rate", "20")]), SETTINGS, NOW)
    assert request.topic == "p.recovery.dlq" and request.target == Target(REDELIVERY)
    assert request.rate == 20.0 and request.record is None
    cli_options = {"dlq": "p.recovery.dlq", "topic": [], "group": ["billing"],
                   "error_type": [], "key": [], "header": [], "since": None, "until": None,
                   "to": "redelivery"}  # what `recovery replay --group billing` stores
    assert request.name == pg.default_name(pg.fingerprint(cli_options))
    through_worker = rp.parse_request({"group": "billing"}, SETTINGS, NOW)
    assert through_worker.target == Target(INCIDENT, "p.recovery.incident-commands")
    assert through_worker.name != request.name
    poison = rp.parse_request({"source": "poison", "to": "original"}, SETTINGS, NOW)
    assert poison.topic == "p.recovery.poison" and poison.target == Target(ORIGINAL)
    assert rp.parse_request({"source": "poison"}, SETTINGS, NOW).target.kind == REDELIVERY
    one = rp.parse_request({"record": "2:17", "to_topic": "audit", "name": "fix-1"},
                           SETTINGS, NOW)
    assert one.record == (2, 17) and one.target == Target(TOPIC, "audit")
    assert one.name == "fix-1" and one.options["record"] == "2:17"


@pytest.mark.parametrize("form, message", [
    ({"source": "elsewhere"}, "bad source"),
    ({"record": "2"}, "bad record"),
    ({"to": "somewhere"}, "bad target"),
    ({"rate": "fast"}, "bad rate"),
    ({"rate": "0"}, "bad rate"),
    ({"name": "../x"}, "bad replay name"),
    ({"since": "soon"}, "bad time"),
])
def test_a_bad_replay_form_is_refused(form, message):
    with pytest.raises(dl.BadRequest, match=message):
        rp.parse_request(form, SETTINGS, NOW)


def test_the_replay_command_is_keyed_by_the_incident_and_keeps_the_key():
    headers = [("trace", b"t"), (h.INCIDENT_ID, b"inc-1"), (h.REPLAY_ID, b"old")]
    key, out = replay_command(headers, b"k", 2, 17)
    assert key == b"inc-1"
    assert out[0] == ("trace", b"t")
    assert h.header_value(out, h.COMMAND) == "replay"
    assert h.header_value(out, h.ORIGINAL_KEY) == "k"
    assert [v for k, v in out if k == h.REPLAY_ID] == [b"2:17"]  # the old one replaced


class FakeRequest(dict):
    """aiohttp's request is a mapping of what middlewares set on it."""


def test_forms_carry_the_csrf_token_and_viewers_get_no_replay_buttons():
    operator = FakeRequest(role="operator", csrf_token='t"<1')
    assert csrf_field(operator) == ('<input type="hidden" name="csrf_token" '
                                    'value="t&quot;&lt;1">')
    assert may_operate(operator) and may_operate(FakeRequest())
    assert not may_operate(FakeRequest(role="viewer"))
    html = layout("x", "<p>body</p>", current="/poison", request=operator)
    assert '<meta name="csrf-token" content="t&quot;&lt;1">' in html
    for link in ("/", "/dead-letters", "/poison", "/incidents"):
        assert f'href="{link}"' in html
