"""How the console shows a record's bytes: UTF-8 text, JSON pretty-printed, else hex. And the
record view: key, value, every header in order, the reason, and a link to the incident's
lifecycle history (the incidents page, app/worker/web/incidents.py). Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.contracts import headers as h

MAX_SHOWN = 64 * 1024  # bytes of a value shown; the rest is cut, and the page says so
TEXT = "text"
JSON = "json"
HEX = "hex"
NULL = "null"
EMPTY = "empty"


@dataclass(frozen=True)
class Rendered:
    kind: str  # TEXT, JSON, HEX, NULL or EMPTY
    text: str
    size: int  # bytes
    truncated: bool = False


def _printable(text: str) -> bool:
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def hex_dump(data: bytes, width: int = 16) -> str:
    """Offset, hex bytes and the printable ASCII beside them, ``width`` bytes a line."""
    lines = []
    for at in range(0, len(data), width):
        chunk = data[at:at + width]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {hexed:<{width * 3 - 1}}  {ascii_}")
    return "\n".join(lines)


def render_value(data: bytes | None, limit: int = MAX_SHOWN) -> Rendered:
    """JSON (an object or array) pretty-printed, else printable UTF-8 as it is, else hex."""
    if data is None:
        return Rendered(NULL, "", 0)
    if not data:
        return Rendered(EMPTY, "", 0)
    size, truncated = len(data), len(data) > limit
    shown = data[:limit]
    try:
        text = shown.decode("utf-8") if not truncated else shown.decode("utf-8", "ignore")
    except UnicodeDecodeError:
        return Rendered(HEX, hex_dump(shown), size, truncated)
    if not truncated and text.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            return Rendered(JSON, json.dumps(parsed, indent=2, ensure_ascii=False), size)
    if _printable(text):
        return Rendered(TEXT, text, size, truncated)
    return Rendered(HEX, hex_dump(shown), size, truncated)


def render_header(value: bytes | None) -> Rendered:
    return render_value(value, limit=8 * 1024)


def incident_link(incident_id: str) -> str:
    """Where the incident's lifecycle history is (the incidents page)."""
    return "/incidents/" + quote(incident_id, safe="")


def record_data(record: Any) -> dict[str, Any]:
    """The record view's content as plain data (the JSON twin of the page)."""
    value, key = render_value(record.value), render_value(record.key, limit=8 * 1024)
    incident = record.header(h.INCIDENT_ID)
    return {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": {"kind": key.kind, "text": key.text, "size": key.size},
        "value": {"kind": value.kind, "text": value.text, "size": value.size,
                  "truncated": value.truncated},
        "headers": [{"name": name, "kind": r.kind, "text": r.text, "size": r.size}
                    for name, raw in record.headers for r in [render_header(raw)]],
        "reason": record.header(h.REASON),
        "error_type": record.header(h.ERROR_TYPE),
        "error_message": record.header(h.ERROR_MESSAGE),
        "original": {"topic": record.header(h.ORIGINAL_TOPIC),
                     "partition": record.header(h.ORIGINAL_PARTITION),
                     "offset": record.header(h.ORIGINAL_OFFSET)},
        "group": record.header(h.CONSUMER_GROUP),
        "incident_id": incident,
        "incident_url": incident_link(incident) if incident else None,
        "replay_id": f"{record.partition}:{record.offset}",
    }
