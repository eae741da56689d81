"""Where a replayed dead letter goes, and what it carries. Pure functions, no Kafka.

- ``original``: the topic it was first consumed from (header ``recovery.original.topic``);
- ``redelivery``: the consumer's redelivery topic, as the worker's retries use it
  (``recovery.dispatch.target`` when the record names one, else ``<group>.redelivery``);
- a named topic;
- ``incident``: through the worker, as the worker's own automatic replay does: the record goes
  to the incident-commands topic as a ``replay`` command keyed by its incident id
  (``recovery.incident.id``); the worker sends it on to the consumer's redelivery topic only
  while the incident is still dead-lettered, and the consumer's acknowledgement completes it.

The replayed record is the dead letter's key, value and headers (the original ones and the
context), byte for byte, plus a ``recovery.replay.id`` appended last, derived from the dead
letter's partition and offset: the same dead letter replayed twice, by this command or by the
worker's automatic replay, carries the same id, and the client API (``RecoveringConsumer``,
``RecoveringAgent``) delivers it once. An earlier replay id the dead letter may carry stays
where it was; the new one, last, is the one ``header_value`` reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.contracts import headers as h
from app.contracts.topics import redelivery_topic

ORIGINAL = "original"
REDELIVERY = "redelivery"
TOPIC = "topic"
INCIDENT = "incident"
# The worker's replay command (app/pipeline/commands.py REPLAY; the pipeline is a layer above).
REPLAY_COMMAND = b"replay"

@dataclass(frozen=True)
class Target:
    kind: str  # ORIGINAL, REDELIVERY or TOPIC
    topic: str | None = None  # for TOPIC

    def describe(self) -> str:
        if self.kind == TOPIC:
            return f"topic {self.topic}"
        if self.kind == ORIGINAL:
            return "each record's original topic"
        if self.kind == INCIDENT:
            return "each record's incident, through the worker"
        return "each consumer's redelivery topic"


def replay_id(partition: int, offset: int) -> bytes:
    """The worker's automatic replay uses the same form (app/worker.py)."""
    return f"{partition}:{offset}".encode()


# headers as a dict holding each header's last value -> topic name, or None if unroutable
Resolver = Callable[[Mapping[str, bytes | None]], str | None]


def resolver(target: Target) -> Resolver:
    if target.kind == TOPIC:
        if not target.topic:
            raise ValueError("a topic target needs a topic name")
        name = target.topic
        return lambda _hs: name
    if target.kind == ORIGINAL:
        return _original
    if target.kind == REDELIVERY:
        return _redelivery
    if target.kind == INCIDENT:
        if not target.topic:
            raise ValueError("an incident target needs the incident-commands topic")
        commands = target.topic
        return lambda hs: commands if hs.get(h.INCIDENT_ID) else None
    raise ValueError(f"unknown target kind {target.kind!r}")


def _original(hs: Mapping[str, bytes | None]) -> str | None:
    topic = hs.get(h.ORIGINAL_TOPIC)
    return topic.decode(errors="replace") if topic else None


def _redelivery(hs: Mapping[str, bytes | None]) -> str | None:
    named = hs.get(h.DISPATCH_TARGET)
    if named:
        return named.decode(errors="replace")
    group = hs.get(h.CONSUMER_GROUP)
    return redelivery_topic(group.decode(errors="replace")) if group else None


def unroutable_reason(target: Target) -> str:
    if target.kind == ORIGINAL:
        return f"no {h.ORIGINAL_TOPIC} header"
    if target.kind == INCIDENT:
        return f"no {h.INCIDENT_ID} header"
    return f"neither {h.DISPATCH_TARGET} nor {h.CONSUMER_GROUP} header"


def replayed_headers(headers: list[tuple[str, bytes | None]], partition: int,
                     offset: int) -> list[tuple[str, bytes | None]]:
    """The dead letter's headers as they are, plus the replay id last. (The replay loop does
    the same in place, on the fresh list each consumed record hands out.)"""
    return [*headers, (h.REPLAY_ID, replay_id(partition, offset))]


def replay_command(headers: list[tuple[str, bytes | None]], key: bytes | None, partition: int,
                   offset: int) -> tuple[bytes | None, list[tuple[str, bytes | None]]]:
    """The key and headers of the worker's replay command for one dead letter (the form of
    app/pipeline/heartbeats.py): keyed by the incident id, the dead letter's key kept in
    ``recovery.original.key``, the replay id replacing any earlier one."""
    return h.header_bytes(headers, h.INCIDENT_ID), h.with_context(headers, {
        h.COMMAND: REPLAY_COMMAND, h.ORIGINAL_KEY: key,
        h.REPLAY_ID: replay_id(partition, offset)})
