import base64
from pathlib import Path

import orjson

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds
from app.cli.produce import encode_lines

REPO = Path(__file__).resolve().parents[3]
CODEC = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))

GOOD = orjson.dumps({
    "kind": "MCP_CONNECTION_LOST", "work_item_id": "w1",
    "source": {"service": "agent"}, "error": {"type": "network_timeout"},
    "detail": {"McpConnectionLost": {"server_id": "s1"}},
    "failed_record": {"topic": "t", "key": "k",
                      "value": {"base64": base64.b64encode(b"\x00\xff").decode()}},
}).decode()


def test_a_good_line_encodes_with_bytes_and_detail() -> None:
    [(number, record, error)] = list(encode_lines([GOOD], CODEC))
    assert (number, error) == (1, None)
    key, value = record
    assert key == b"w1"
    decoded = CODEC.decode(value, "failure-event")
    assert decoded["failed_record"]["value"] == b"\x00\xff"
    assert decoded["failed_record"]["key"] == b"k"
    assert decoded["detail"][0] == "io.recovery.v1.McpConnectionLost"


def test_each_bad_line_is_named_and_the_rest_still_encode() -> None:
    lines = [GOOD, "{oops", '{"kind": "MCP_CONNECTION_LOST"}', "", "[1, 2]",
             GOOD.replace('"s1"', "17"), GOOD]
    results = list(encode_lines(lines, CODEC))
    errors = {n: e for n, _, e in results if e}
    assert set(errors) == {2, 3, 5, 6}
    assert "not JSON" in errors[2]
    assert "failure-event" in errors[3]
    assert "JSON object" in errors[5]
    assert [n for n, r, e in results if r is not None] == [1, 7]
