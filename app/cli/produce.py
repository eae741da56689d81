"""`recovery produce`: failure events from JSON lines, each validated against the schema
before anything is sent."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from app.avro.codec import AvroCodec
from app.contracts.failure_event import SUBJECT
from app.contracts.lifecycle import now_ms


class LineError(ValueError):
    pass


def _bytes(value: Any, where: str) -> bytes | None:
    """JSON has no bytes: a string is taken as UTF-8, {"base64": "..."} as base64."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"base64"}:
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError as exc:
            raise LineError(f"{where}: bad base64: {exc}") from None
    raise LineError(f"{where}: expected a string or {{\"base64\": ...}}")


def event_from_json(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise LineError("expected a JSON object")
    event = dict(data)
    event.setdefault("event_id", str(uuid.uuid4()))
    event.setdefault("occurred_at", now_ms())
    failed = event.get("failed_record")
    if isinstance(failed, dict):
        failed = dict(failed)
        failed["key"] = _bytes(failed.get("key"), "failed_record.key")
        failed["value"] = _bytes(failed.get("value"), "failed_record.value")
        failed["headers"] = [{"key": h.get("key"), "value": _bytes(h.get("value"), "header")}
                             for h in failed.get("headers", [])]
        event["failed_record"] = failed
    detail = event.get("detail")
    if isinstance(detail, dict):
        if len(detail) != 1:
            raise LineError('detail: expected {"RecordName": {...fields}}')
        [(name, fields)] = detail.items()
        event["detail"] = (name if "." in name else f"io.recovery.v1.{name}", fields)
    return event


def encode_lines(lines: Iterable[str], codec: AvroCodec) -> Iterable[tuple[int, Any, str | None]]:
    """(line number, (key, value) or None, error) for each non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = event_from_json(orjson.loads(line))
            value = codec.encode(SUBJECT, event)
        except orjson.JSONDecodeError as exc:
            yield number, None, f"not JSON: {exc}"
            continue
        except (LineError, ValueError) as exc:
            yield number, None, str(exc)
            continue
        key = (event.get("work_item_id") or event["event_id"]).encode()
        yield number, (key, value), None
