"""`recovery produce`: failure events from JSON lines, each validated against the schema
before anything is sent."""

from __future__ import annotations

import base64
import sys
import uuid
from collections.abc import Iterable
from typing import Any

import click
import orjson

from app.avro.codec import AvroCodec
from app.cli.common import cluster_size
from app.contracts.clock import now_ms
from app.contracts.failure_event import SUBJECT
from app.settings import get_settings


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


@click.command("produce")
@click.argument("source", type=click.File("r"), default="-")
def produce(source) -> None:
    """Send failure events from JSON lines (a file or stdin), validating each line first.
    A bad line gets one error naming it and is not sent; the rest are."""
    from confluent_kafka import Producer

    from app.avro.catalog import SchemaCatalog
    from app.avro.codec import codec_from_settings
    from app.kafka.config import producer_config

    settings = get_settings()
    codec = codec_from_settings(SchemaCatalog.load(settings.schemas_dir),
                                settings.schema_registry_url)
    cluster_size()  # a refused password is one plain line, not a 30 s delivery timeout
    producer = Producer(producer_config(settings))
    topic = settings.topic("recovery.failures")
    sent = bad = 0
    for number, record, error in encode_lines(source, codec):
        if error is not None:
            bad += 1
            click.echo(f"line {number}: {error}", err=True)
            continue
        producer.produce(topic, key=record[0], value=record[1])
        producer.poll(0)
        sent += 1
    if producer.flush(30):
        raise click.ClickException("some events were not delivered within 30 s")
    click.echo(f"sent {sent} failure events to {topic}" + (f", {bad} bad lines" if bad else ""))
    if bad:
        sys.exit(1)
