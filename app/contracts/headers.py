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
FAILURE_EVENT_ID = PREFIX + "failure.event.id"
RETRY_DUE = PREFIX + "retry.due"
DISPATCH_TARGET = PREFIX + "dispatch.target"
HELD = PREFIX + "retry.held"
REPLAY_ID = PREFIX + "replay.id"
COMMAND = PREFIX + "command"
# A watchdog command's decision time (ms): the incident agent decides as of it, so a command
# handled again after a crash decides as it did the first time.
DECIDED_AT = PREFIX + "decided.at"
# And the incident's consumer health as the timer read it ("1" healthy, "0" not): health is
# live state (heartbeats keep arriving), so a command handled again read it afresh and could
# redispatch where the first run dead-lettered, beside the acknowledgement that followed.
CONSUMER_HEALTHY = PREFIX + "consumer.healthy"
ORIGINAL_KEY = PREFIX + "original.key"
# Which worker sent a lifecycle event, and in which consumer generation ("host:pid/g7"):
# tells a worker that lost its partitions without knowing it yet from its successor.
EMITTED_BY = PREFIX + "emitted.by"

# Headers the service itself adds; stripped when a record goes back to its consumer's own
# flow as a plain record would be meaningless, but kept on redeliveries so the consumer
# wrapper knows which incident and attempt it is handling.
OWN = frozenset({
    ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP, CONSUMER_GROUP,
    ERROR_TYPE, ERROR_MESSAGE, ERROR_STACKTRACE, CLASSIFICATION, ATTEMPT, FIRST_FAILURE,
    LAST_FAILURE, INCIDENT_ID, REASON, FAILURE_EVENT_ID, RETRY_DUE, DISPATCH_TARGET, HELD,
    REPLAY_ID, COMMAND, ORIGINAL_KEY, DECIDED_AT, CONSUMER_HEALTHY, EMITTED_BY,
})


def without(headers: Iterable[tuple[str, bytes | None]], keys: Iterable[str]) -> Headers:
    drop = set(keys)
    return [(k, v) for k, v in headers if k not in drop]

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
    one current set rather than three stale ones. A context value of None replaces nothing:
    a header of that name already on the record stays."""
    kept = [(k, v) for k, v in original if context.get(k) is None]
    added = [(k, _encode(v)) for k, v in context.items() if v is not None]
    return kept + added


def _encode(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def header_bytes(headers: Iterable[tuple[str, bytes | None]] | None, key: str) -> bytes | None:
    """The last value of a header (a later hop's value wins)."""
    found = None
    for k, v in headers or ():
        if k == key:
            found = v
    return found


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, key: str) -> str | None:
    found = header_bytes(headers, key)
    return None if found is None else found.decode(errors="replace")


def header_int(headers: Iterable[tuple[str, bytes | None]] | None, key: str) -> int | None:
    found = header_value(headers, key)
    try:
        return int(found) if found is not None else None
    except ValueError:
        return None
