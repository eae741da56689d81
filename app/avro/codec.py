"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body."""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from app.avro.catalog import SchemaCatalog

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class DecodeError(ValueError):
    """Bytes that are not a valid record of a known schema; the message is the reason."""


class SchemaIds(Protocol):
    """Where schema ids come from: the schemas/ lock file or a Confluent-compatible registry."""

    def writer(self, subject: str) -> tuple[int, Any]: ...

    def by_id(self, schema_id: int) -> Any | None: ...


class LockedSchemaIds:
    def __init__(self, catalog: SchemaCatalog):
        self.catalog = catalog

    def writer(self, subject: str) -> tuple[int, Any]:
        latest = self.catalog.subject(subject).latest
        return latest.schema_id, latest.parsed

    def by_id(self, schema_id: int) -> Any | None:
        version = self.catalog.by_id(schema_id)
        return version.parsed if version else None


class RegistrySchemaIds:
    """Registers the catalog's latest version of a subject and resolves ids through a
    confluent-kafka SchemaRegistryClient (a real registry, or `mock://` in tests)."""

    def __init__(self, catalog: SchemaCatalog, client: Any):
        self.catalog = catalog
        self.client = client
        self._writers: dict[str, tuple[int, Any]] = {}
        self._by_id: dict[int, Any] = {}

    def writer(self, subject: str) -> tuple[int, Any]:
        if subject not in self._writers:
            from confluent_kafka.schema_registry import Schema

            latest = self.catalog.subject(subject).latest
            schema_id = self.client.register_schema(
                subject, Schema(json.dumps(latest.schema), "AVRO")
            )
            self._writers[subject] = (schema_id, latest.parsed)
            self._by_id[schema_id] = latest.parsed
        return self._writers[subject]

    def by_id(self, schema_id: int) -> Any | None:
        if schema_id not in self._by_id:
            try:
                registered = self.client.get_schema(schema_id)
            except Exception:
                return None
            self._by_id[schema_id] = parse_schema(json.loads(registered.schema_str))
        return self._by_id[schema_id]


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
        reader = self.ids.writer(subject)[1] if subject else None
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


def codec_from_settings(catalog: SchemaCatalog, registry_url: str | None) -> AvroCodec:
    if registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        client = SchemaRegistryClient.new_client({"url": registry_url})
        return AvroCodec(RegistrySchemaIds(catalog, client))
    return AvroCodec(LockedSchemaIds(catalog))
