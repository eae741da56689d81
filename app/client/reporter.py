"""Reporting failures to the recovery service, and telling it what went well."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
from confluent_kafka import Message, Producer

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, codec_from_settings
from app.contracts import headers as h
from app.contracts.failure_event import SUBJECT, new_failure_event
from app.kafka import config as kafka_config
from app.settings import Settings, get_settings


def work_item_of(message: Message, consumer_group: str | None) -> str:
    """A redelivered record keeps the incident it belongs to; a first failure names its own
    position, so reporting the same record twice never opens two incidents."""
    incident = h.header_value(message.headers(), h.INCIDENT_ID)
    if incident:
        return incident
    return f"{consumer_group or '-'}:{message.topic()}:{message.partition()}:{message.offset()}"


def failed_record_of(message: Message) -> dict[str, Any]:
    """A redelivered record names the original's position and time (its context headers),
    not the redelivery's."""
    kind, timestamp = message.timestamp()
    own = h.OWN
    redelivered = h.header_value(message.headers(), h.ORIGINAL_TOPIC) is not None
    return {
        "topic": h.header_value(message.headers(), h.ORIGINAL_TOPIC) or message.topic(),
        "partition": h.header_int(message.headers(), h.ORIGINAL_PARTITION)
        if redelivered else message.partition(),
        "offset": h.header_int(message.headers(), h.ORIGINAL_OFFSET)
        if redelivered else message.offset(),
        "timestamp": h.header_int(message.headers(), h.ORIGINAL_TIMESTAMP)
        if redelivered else (timestamp if kind else None),
        "key": message.key(),
        "value": message.value(),
        # The service's own context headers are not part of the record: it adds them again.
        "headers": [{"key": k, "value": v} for k, v in (message.headers() or []) if k not in own],
    }


class FailureReporter:
    def __init__(self, settings: Settings | None = None, *, producer: Producer | None = None,
                 codec: AvroCodec | None = None, producer_config: dict[str, Any] | None = None):
        self.settings = settings or get_settings()
        self.codec = codec or codec_from_settings(SchemaCatalog.load(self.settings.schemas_dir),
                                                  self.settings.schema_registry_url)
        self.producer = producer or Producer(
            kafka_config.producer_config(self.settings, **(producer_config or {})))
        self.failures_topic = self.settings.topic("recovery.failures")
        self.commands_topic = self.settings.topic("recovery.incident-commands")
        self.heartbeats_topic = self.settings.topic("recovery.heartbeats")
        # Reports and acknowledgements the broker has not acknowledged yet, by send number;
        # those whose delivery failed are sent again by confirm(). Heartbeats are not kept:
        # the next one supersedes a lost one.
        self._unconfirmed: dict[int, tuple[str, bytes, bytes, list | None]] = {}
        self._failed: set[int] = set()
        self._sent = 0
        self._lock = threading.Lock()

    def _send(self, topic: str, key: bytes, value: bytes, headers: list | None = None,
              number: int | None = None) -> None:
        with self._lock:
            if number is None:
                self._sent += 1
                number = self._sent
            self._unconfirmed[number] = (topic, key, value, headers)
            self._failed.discard(number)

        def delivered(err: Any, _message: Any) -> None:
            with self._lock:
                if err is None:
                    self._unconfirmed.pop(number, None)
                else:
                    self._failed.add(number)

        self.producer.produce(topic, key=key, value=value, headers=headers,
                              on_delivery=delivered)
        self.producer.poll(0)

    def confirm(self, timeout: float = 10) -> bool:
        """True once the broker has acknowledged every report and acknowledgement sent so
        far. One whose delivery failed is sent again, the same bytes (so the same event id,
        which the worker recognises). A caller commits a record's offset only after this."""
        with self._lock:
            again = [(n, self._unconfirmed[n]) for n in sorted(self._failed)]
        for number, (topic, key, value, headers) in again:
            self._send(topic, key, value, headers, number=number)
        self.producer.flush(timeout)
        with self._lock:
            return not self._unconfirmed

    def report_event(self, event: dict[str, Any]) -> None:
        """Send a ready failure-event record (validated by encoding it)."""
        key = (event.get("work_item_id") or event["event_id"]).encode()
        self._send(self.failures_topic, key, self.codec.encode(SUBJECT, event))

    def report(self, *, kind: str, error_type: str, service: str, message: str = "",
               record: Message | None = None, consumer_group: str | None = None,
               work_item_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Report a failure, with the failed record attached when there is one."""
        if record is not None and work_item_id is None:
            work_item_id = work_item_of(record, consumer_group)
        event = new_failure_event(
            kind=kind, error_type=error_type, service=service, message=message,
            consumer_group=consumer_group, work_item_id=work_item_id,
            failed_record=failed_record_of(record) if record is not None
            else fields.pop("failed_record", None),
            **fields)
        self.report_event(event)
        return event

    def acknowledge(self, incident_id: str, replay_id: str | None = None) -> None:
        """The redelivered record was handled: the incident completes."""
        headers = [(h.COMMAND, b"ack")]
        if replay_id:
            headers.append((h.REPLAY_ID, replay_id.encode()))
        self._send(self.commands_topic, incident_id.encode(), b"", headers)

    def heartbeat(self, group: str, *, status: str = "healthy", events_processed: int = 0,
                  member: str | None = None, control_id: str | None = None) -> None:
        """`control_id`: the last control command the consumer obeyed (app/client/control),
        which the recovery watch after a restart in safe mode waits for."""
        beat = {"group": group, "member": member, "status": status,
                "events_processed": events_processed, "ts": int(time.time() * 1000)}
        if control_id is not None:
            beat["control_id"] = control_id
        self.producer.produce(self.heartbeats_topic, key=group.encode(), value=orjson.dumps(beat))
        self.producer.poll(0)

    def flush(self, timeout: float = 10) -> int:
        return self.producer.flush(timeout)
