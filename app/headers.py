"""The context-header namespace every moved record (retry, dead letter, poison, redelivery)
gains. The record's own key, value and headers are kept as they were; these are appended."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

PREFIX = "recovery."

ORIGINAL_TOPIC = PREFIX + "original.topic"
ORIGINAL_PARTITION = PREFIX + "original.partition"
ORIGINAL_OFFSET = PREFIX + "original.offset"
ORIGINAL_TIMESTAMP = PREFIX + "original.timestamp"
CONSUMER_GROUP = PREFIX + "consumer.group"
ERROR_TYPE = PREFIX + "error.type"
ERROR_MESSAGE = PREFIX + "error.message"
ERROR_STACKTRACE = PREFIX + "error.stacktrace"
CLASSIFICATION = PREFIX + "classification"
ATTEMPT = PREFIX + "attempt"
FIRST_FAILURE = PREFIX + "failure.first"
LAST_FAILURE = PREFIX + "failure.last"
INCIDENT_ID = PREFIX + "incident.id"
REASON = PREFIX + "reason"

Headers = list[tuple[str, bytes | None]]


HeadersArg = Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]] | None


def normalize(headers: HeadersArg) -> Headers:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return [(k, v) for k, v in headers]


def with_context(
    original: Iterable[tuple[str, bytes | None]], context: Mapping[str, object | None]
) -> Headers:
    """Original headers first and untouched, then one header per non-empty context value.
    An earlier hop's context headers are replaced, so a record retried three times carries
    one current set rather than three stale ones."""
    kept = [(k, v) for k, v in original if k not in context]
    added = [(k, _encode(v)) for k, v in context.items() if v is not None]
    return kept + added


def _encode(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def header_value(headers: Iterable[tuple[str, bytes | None]], key: str) -> str | None:
    found = None
    for k, v in headers:
        if k == key and v is not None:
            found = v.decode(errors="replace")
    return found
