"""The two shapes of a Kafka record inside the service: one read (with its position) and
one to send. Stages exchange these; only the worker and the clients touch Kafka itself."""

from __future__ import annotations

from dataclasses import dataclass

from app.contracts.headers import Headers


@dataclass(frozen=True)
class RawRecord:
    """A record as read: where it was, and its key, value and headers untouched."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class OutRecord:
    """A record to send: the topic, and the key, value and headers byte for byte."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
