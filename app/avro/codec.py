"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

Ids come from the schemas/ lock file, or from a Confluent-compatible registry
(SCHEMA_REGISTRY_URL). With a registry, a lookup that fails for any reason but "no such id"
(HTTP 404) raises SchemaRegistryUnavailable, never DecodeError: the record is good as far as
anyone knows, and must wait for the registry rather than go to the poison topic.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from app.avro.catalog import SchemaCatalog, Subject

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """Bytes that are not a valid record of a known schema; the message is the reason."""


class SchemaRegistryUnavailable(Exception):
    """The registry could not answer (unreachable, timed out, an HTTP error other than 404):
    transient as far as a record is concerned. Retry; never quarantine for it."""


class SchemaRegistryRefused(Exception):
    """The registry refused to register a schema (HTTP 409: incompatible; 422: invalid)."""


class SubjectStrategy(StrEnum):
    """How registry subjects are named (RECOVERY_SCHEMA_SUBJECT_STRATEGY, docs/schemas.md).

    catalog: the schemas/ subject name ("failure-event"), the default;
    topic:   "<topic>-value", Confluent's TopicNameStrategy and its serializers' default, for
             the subject's first topic in schemas/subjects.toml, with RECOVERY_TOPIC_PREFIX;
    record:  the record's full name ("io.recovery.v1.FailureEvent"), RecordNameStrategy."""

    CATALOG = "catalog"
    TOPIC = "topic"
    RECORD = "record"


def registry_subject(subject: Subject, strategy: SubjectStrategy | str,
                     topic_prefix: str = "", schema: Any = None) -> str:
    """The registry subject a schemas/ subject's version (`schema`; default the latest) is
    registered under."""
    strategy = SubjectStrategy(strategy)
    if strategy is SubjectStrategy.TOPIC:
        if not subject.topics:
            raise ValueError(f"subject {subject.name} names no topic in subjects.toml, which "
                             "the topic naming strategy needs")
        return f"{topic_prefix}{subject.topics[0]}-value"
    if strategy is SubjectStrategy.RECORD:
        schema = subject.latest.schema if schema is None else schema
        name = schema["name"]
        namespace = schema.get("namespace")
        return name if "." in name or not namespace else f"{namespace}.{name}"
    return subject.name


class SchemaIds(Protocol):
    """Where schema ids come from: the schemas/ lock file or a Confluent-compatible registry."""

    def writer(self, subject: str) -> tuple[int, Any]: ...

    def reader(self, subject: str) -> Any: ...

    def by_id(self, schema_id: int) -> Any | None: ...


class LockedSchemaIds:
    def __init__(self, catalog: SchemaCatalog):
        self.catalog = catalog

    def writer(self, subject: str) -> tuple[int, Any]:
        latest = self.catalog.subject(subject).latest
        return latest.schema_id, latest.parsed

    def reader(self, subject: str) -> Any:
        return self.catalog.subject(subject).latest.parsed

    def by_id(self, schema_id: int) -> Any | None:
        version = self.catalog.by_id(schema_id)
        return version.parsed if version else None


class RegistrySchemaIds:
    """Registers the catalog's latest version of a subject and resolves ids through a
    confluent-kafka SchemaRegistryClient (a real registry, or `mock://` in tests)."""

    def __init__(self, catalog: SchemaCatalog, client: Any,
                 subject_name: Callable[[Subject], str] | None = None, url: str = ""):
        self.catalog = catalog
        self.client = client
        self.subject_name = subject_name or (lambda s: s.name)
        self.url = url or "the schema registry"
        self._writers: dict[str, tuple[int, Any]] = {}
        self._by_id: dict[int, Any | None] = {}

    def writer(self, subject: str) -> tuple[int, Any]:
        if subject not in self._writers:
            from confluent_kafka.schema_registry import Schema

            found = self.catalog.subject(subject)
            name = self.subject_name(found)
            latest = found.latest
            try:
                schema_id = self.client.register_schema(
                    name, Schema(json.dumps(latest.schema), "AVRO"))
            except Exception as exc:
                status = getattr(exc, "http_status_code", None)
                if status in (409, 422):
                    raise SchemaRegistryRefused(
                        f"{self.url} refused {subject} v{latest.version} under subject "
                        f"{name} (HTTP {status}): {_registry_message(exc)}") from None
                raise SchemaRegistryUnavailable(
                    f"{self.url}: registering {name} failed: {_registry_message(exc)}") from exc
            self._writers[subject] = (schema_id, latest.parsed)
            self._by_id[schema_id] = latest.parsed
        return self._writers[subject]

    def reader(self, subject: str) -> Any:
        return self.catalog.subject(subject).latest.parsed

    def cached(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def by_id(self, schema_id: int) -> Any | None:
        """The writer schema of an id; None only when the registry answers 404 (no such id).
        Any other failure raises SchemaRegistryUnavailable."""
        if schema_id not in self._by_id:
            try:
                registered = self.client.get_schema(schema_id)
            except Exception as exc:  # SchemaRegistryError, or httpx's transport errors
                if getattr(exc, "http_status_code", None) == 404:
                    self._by_id[schema_id] = None
                    return None
                raise SchemaRegistryUnavailable(
                    f"{self.url}: looking up schema id {schema_id} failed: "
                    f"{_registry_message(exc)}") from exc
            if (registered.schema_type or "AVRO") != "AVRO":
                raise DecodeError(f"schema id {schema_id} is a {registered.schema_type} schema, "
                                  "not Avro")
            try:
                self._by_id[schema_id] = parse_schema(json.loads(registered.schema_str))
            except Exception as exc:
                raise DecodeError(f"schema id {schema_id} is not a valid Avro schema: "
                                  f"{exc}") from exc
        return self._by_id[schema_id]


def _registry_message(exc: BaseException) -> str:
    message = getattr(exc, "error_message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]


class AvroCodec:
    def __init__(self, ids: SchemaIds):
        self.ids = ids

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        schema_id, schema = self.ids.writer(subject)
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        try:
            schemaless_writer(out, schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"record does not match {subject}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes | None, subject: str | None = None) -> dict[str, Any]:
        """Decode wire-format bytes. With a subject, the record is resolved to that subject's
        latest schema, so readers always see the current shape whatever version wrote it."""
        if not data:
            raise DecodeError("empty value")
        if len(data) < _HEADER.size:
            raise DecodeError(f"{len(data)} bytes is shorter than the 5-byte wire-format header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise DecodeError(f"magic byte {magic}, expected {MAGIC_BYTE}")
        writer = self.ids.by_id(schema_id)
        if writer is None:
            raise DecodeError(f"unknown schema id {schema_id}")
        reader = self.ids.reader(subject) if subject else None
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = schemaless_reader(
                buf, writer, reader, return_record_name=True, return_record_name_override=True
            )
        except Exception as exc:  # fastavro raises many kinds on malformed input
            raise DecodeError(f"malformed Avro body for schema id {schema_id}: {exc!r}") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the Avro record")
        if not isinstance(record, dict):
            raise DecodeError(f"schema id {schema_id} is not a record schema")
        return record


    async def wait_for_writer(self, data: bytes | None, log: logging.Logger,
                              first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        """Make sure the writer schema of `data` is known before `decode` runs in an event
        loop: a registry lookup runs in a thread (the loop keeps heartbeating), and while the
        registry cannot answer, it is retried with capped exponential backoff, each failure
        logged. The caller's record waits meanwhile: it is neither acknowledged nor poisoned.
        Returns at once for lock-file ids, cached ids and bytes decode will refuse anyway."""
        ids = self.ids
        if not isinstance(ids, RegistrySchemaIds) or not data or len(data) < _HEADER.size:
            return
        magic, schema_id = _HEADER.unpack_from(data)
        delay, attempt = first_delay, 0
        while magic == MAGIC_BYTE and not ids.cached(schema_id):
            try:
                await asyncio.to_thread(ids.by_id, schema_id)
                return
            except DecodeError:
                return  # not an Avro schema: decode says so, and intake quarantines the record
            except SchemaRegistryUnavailable as exc:
                attempt += 1
                log.warning("%s; the record waits, retry %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)


def wait_until_registered(codec: AvroCodec, subjects: Iterable[str], log: logging.Logger,
                          first_delay: float = 1.0, max_delay: float = 30.0,
                          sleep: Callable[[float], None] = time.sleep) -> None:
    """At start-up: register the subjects this process writes (with a registry; no-op with the
    lock file), retrying while the registry is down, each failure one clear log line, rather
    than crashing and being restarted in a loop. A refusal (incompatible) is raised."""
    if not isinstance(codec.ids, RegistrySchemaIds):
        return
    delay, attempt = first_delay, 0
    while True:
        try:
            for subject in subjects:
                codec.ids.writer(subject)
            return
        except SchemaRegistryUnavailable as exc:
            attempt += 1
            log.error("schema registry unavailable at start-up (%s); retry %d in %.0fs",
                      exc, attempt, delay)
            sleep(delay)
            delay = min(delay * 2, max_delay)


def registry_client(registry_url: str) -> Any:
    """A SchemaRegistryClient for a URL (or `mock://` for tests) that fails fast: 5 s per
    request, no retries of its own (the callers retry with backoff and log each failure)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    if registry_url.startswith("mock://"):
        return SchemaRegistryClient.new_client({"url": registry_url})
    return SchemaRegistryClient({"url": registry_url, "timeout": 5, "max.retries": 0})


def codec_from_settings(catalog: SchemaCatalog, registry_url: str | None, *,
                        subject_strategy: SubjectStrategy | str | None = None,
                        topic_prefix: str | None = None) -> AvroCodec:
    """The codec for the settings: lock-file ids, or a registry. The subject naming strategy
    and topic prefix default to RECOVERY_SCHEMA_SUBJECT_STRATEGY and RECOVERY_TOPIC_PREFIX."""
    if not registry_url:
        return AvroCodec(LockedSchemaIds(catalog))
    if subject_strategy is None or topic_prefix is None:
        from app.settings import get_settings

        settings = get_settings()
        subject_strategy = subject_strategy or settings.schema_subject_strategy
        topic_prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
    strategy, prefix = SubjectStrategy(subject_strategy), topic_prefix

    def subject_name(subject: Subject) -> str:
        return registry_subject(subject, strategy, prefix)

    return AvroCodec(RegistrySchemaIds(catalog, registry_client(registry_url), subject_name,
                                       registry_url))
