"""The tool registry and the tool-result cache (Scenarios 1 and 2).

Tool servers announce the tools they offer, and withdraw them, on the compacted topic
`recovery.tool-registry`, keyed `<server id>/<tool>`, with JSON values:

    {"op": "announce", "server_id": "mcp-a", "tool": "get_weather", "version": "1.2.0",
     "description": "Current weather for a city", "request_topic": "mcp-a.requests",
     "protocol_version": "2024-11-05", "announced_at": 1732850000000}
    {"op": "withdraw", "server_id": "mcp-a", "tool": "get_weather"}

(a tombstone, a null value under the key, withdraws too). Successful tool results are kept
on the compacted topic `recovery.tool-results`, keyed by tool and arguments
(`cache_key`), so a result can be returned, marked degraded, when no server answers:

    {"tool": "get_weather", "arguments": {"city": "Oslo"}, "result": {...},
     "stored_at": 1732850000000}

The worker keeps both in Faust global tables (every worker holds all of them); records that
cannot be read go to the poison topic with a reason. The parsing and lookups are pure."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from app.contracts import headers as h
from app.contracts.clock import SYSTEM, Clock

if TYPE_CHECKING:
    import faust
    from confluent_kafka import Producer

    from app.pipeline.strategy import StrategyServices
    from app.settings import Settings

log = logging.getLogger(__name__)

TOPIC = "recovery.tool-registry"
RESULTS_TOPIC = "recovery.tool-results"
QUERIES_TOPIC = "recovery.tool-queries"
# How long after a changelog record the registry is listed afresh on every read (Faust
# applies the records it restores in batches, shortly after they arrive).
CHANGELOG_SETTLE_MS = 2000


@dataclass(frozen=True)
class ToolEntry:
    server_id: str
    tool: str
    version: str = ""
    description: str = ""
    request_topic: str | None = None
    protocol_version: str | None = None
    announced_at: int = 0

    @property
    def key(self) -> str:
        return registry_key(self.server_id, self.tool)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolEntry:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def descriptor(self) -> dict[str, Any]:
        """What the source calls a ToolDescriptor."""
        return {"name": self.tool, "serverId": self.server_id, "version": self.version,
                "description": self.description, "requestTopic": self.request_topic,
                "protocolVersion": self.protocol_version}


def registry_key(server_id: str, tool: str) -> str:
    return f"{server_id}/{tool}"


@dataclass(frozen=True)
class Announce:
    entry: ToolEntry


@dataclass(frozen=True)
class Withdraw:
    key: str


@dataclass(frozen=True)
class Invalid:
    reason: str


RegistryRecord = Announce | Withdraw | Invalid


def parse_registry_record(key: bytes | None, value: bytes | None) -> RegistryRecord:
    if value is None:
        if not key:
            return Invalid("a tombstone without a key")
        return Withdraw(key.decode(errors="replace"))
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"registry record is not JSON: {exc}")
    if not isinstance(data, dict):
        return Invalid("registry record is not a JSON object")
    op = data.get("op", "announce")
    server, tool = data.get("server_id"), data.get("tool")
    if not isinstance(server, str) or not server or not isinstance(tool, str) or not tool:
        return Invalid("registry record lacks server_id or tool")
    if op == "withdraw":
        return Withdraw(registry_key(server, tool))
    if op != "announce":
        return Invalid(f"unknown registry op {op!r}")
    try:
        entry = ToolEntry(
            server_id=server, tool=tool, version=str(data.get("version") or ""),
            description=str(data.get("description") or ""),
            request_topic=data.get("request_topic") or None,
            protocol_version=data.get("protocol_version") or None,
            announced_at=int(data.get("announced_at") or 0))
    except (TypeError, ValueError) as exc:
        return Invalid(f"bad registry record: {exc}")
    return Announce(entry)


def registry_update(current: dict[str, Any] | None, record: RegistryRecord
                    ) -> tuple[str, dict[str, Any] | None] | None:
    """(table key, new value or None to delete), or None when nothing changes: an
    announcement older than the one kept (by announced_at) is out of date."""
    match record:
        case Announce(entry=entry):
            if current and int(current.get("announced_at") or 0) > entry.announced_at:
                return None
            return entry.key, entry.to_json()
        case Withdraw(key=key):
            return (key, None) if current is not None else None
    return None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:4])


def offering(entries: Iterable[ToolEntry], tool: str, *, exclude: Iterable[str] = ()
             ) -> list[ToolEntry]:
    """Servers offering the tool, newest version first, then by server id."""
    skip = set(exclude)
    found = [e for e in entries if e.tool == tool and e.server_id not in skip]
    return sorted(found, key=lambda e: (tuple(-n for n in version_key(e.version)), e.server_id))


def tools_of(entries: Iterable[ToolEntry], server_id: str) -> list[str]:
    return sorted({e.tool for e in entries if e.server_id == server_id})


# ---- cached results ---------------------------------------------------------------------

def canonical_arguments(arguments: Any) -> bytes:
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments.encode()
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


def cache_key(tool: str, arguments: Any) -> str:
    """Tool and arguments; the same arguments in another key order give the same key."""
    digest = hashlib.sha256(canonical_arguments(arguments)).hexdigest()[:32]
    return f"{tool}#{digest}"


@dataclass(frozen=True)
class CachedResult:
    tool: str
    result: Any
    stored_at: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedResult:
        return cls(str(data["tool"]), data.get("result"), int(data.get("stored_at") or 0))


def parse_result_record(value: bytes | None) -> tuple[str, CachedResult] | Invalid:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return Invalid(f"tool result is not JSON: {exc}")
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str) or (
            "result" not in data):
        return Invalid("tool result lacks tool or result")
    stored = data.get("stored_at") or 0
    if not isinstance(stored, int):
        return Invalid("tool result stored_at is not a number")
    return (cache_key(data["tool"], data.get("arguments", {})),
            CachedResult(data["tool"], data["result"], stored))


def usable(cached: CachedResult | None, now: int, max_age_ms: int) -> bool:
    return cached is not None and (max_age_ms <= 0 or now - cached.stored_at <= max_age_ms)


# ---- records tool servers and their clients produce -------------------------------------

def announce_record(entry: ToolEntry) -> tuple[bytes, bytes]:
    return entry.key.encode(), orjson.dumps({"op": "announce", **entry.to_json()})


def withdraw_record(server_id: str, tool: str) -> tuple[bytes, bytes]:
    return (registry_key(server_id, tool).encode(),
            orjson.dumps({"op": "withdraw", "server_id": server_id, "tool": tool}))


def result_record(tool: str, arguments: Any, result: Any, stored_at: int
                  ) -> tuple[bytes, bytes]:
    return cache_key(tool, arguments).encode(), orjson.dumps({
        "tool": tool, "arguments": arguments, "result": result, "stored_at": stored_at})


def reply_topic_of(headers: h.Headers, header: str) -> str | None:
    return h.header_value(headers, header) or None


class ToolDirectoryClient:
    """What a tool server (announce, withdraw, answer discovery queries) and a tool caller
    (remember results) send to the recovery service."""

    def __init__(self, settings: Settings | None = None, producer: Producer | None = None,
                 clock: Clock = SYSTEM):
        from confluent_kafka import Producer

        from app.kafka import config as kafka_config
        from app.settings import get_settings

        self.settings = settings or get_settings()
        self.producer = producer or Producer(kafka_config.producer_config(self.settings))
        self.clock = clock  # when a remembered result was stored

    def _send(self, logical: str, key: bytes, value: bytes) -> None:
        self.producer.produce(self.settings.topic(logical), key=key, value=value)
        self.producer.poll(0)

    def announce(self, entry: ToolEntry) -> None:
        self._send(TOPIC, *announce_record(entry))

    def withdraw(self, server_id: str, tool: str) -> None:
        self._send(TOPIC, *withdraw_record(server_id, tool))

    def remember_result(self, tool: str, arguments: Any, result: Any) -> None:
        self._send(RESULTS_TOPIC, *result_record(tool, arguments, result,
                                                 stored_at=self.clock.now_ms()))

    def answer_query(self, query: dict[str, Any], entry: ToolEntry) -> None:
        """A server that offers the queried tool answers the discovery query (Scenario 2)."""
        from app.scenarios.shared import watches

        value = watches.resolve_record(str(query["watch_id"]), {"tool": entry.to_json()})
        self.producer.produce(str(query["reply_topic"]), key=str(query["watch_id"]).encode(),
                              value=value)
        self.producer.poll(0)

    def confirm_match(self, confirmation_id: str, accept: bool = True,
                      by: str | None = None) -> None:
        """A user accepts (or refuses) a suggested semantic tool match (Scenario 2)."""
        from app.scenarios.shared import watches

        self.producer.produce(self.settings.topic(watches.TOPIC),
                              key=confirmation_id.encode(),
                              value=watches.resolve_record(confirmation_id, {
                                  "confirmed": accept, "by": by}))
        self.producer.poll(0)

    def flush(self, timeout: float = 10) -> int:
        return int(self.producer.flush(timeout))


# ---- the worker's side: global tables fed by agents --------------------------------------

class ToolRegistry:
    """The registry and result tables of one worker, and the agents that fill them."""

    def __init__(self, app: faust.App, services: StrategyServices):
        import faust

        from app.contracts.records import OutRecord

        self.services = services
        self.topic_name = services.settings.topic(TOPIC)
        self.results_topic_name = services.settings.topic(RESULTS_TOPIC)
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                               "key_serializer": "raw", "value_serializer": "raw"}
        json_values: faust.Schema = faust.Schema(key_type=str, key_serializer="raw",
                                                 value_serializer="json")
        # Partitioned as the topics that feed them (Faust checks): the registry has one.
        # Every mcp failure event reads the registry's entries; listing a Faust table walks
        # its stores (a tenth of the worker's time per event in the benchmark), so the list
        # is kept until the table changes: a write here clears it, and a changelog record
        # (another worker's write, applied by Faust a little after it arrives) stops keeping
        # it for CHANGELOG_SETTLE_MS.
        self._entries: list[ToolEntry] | None = None
        self._changed_at = -CHANGELOG_SETTLE_MS
        self.table = app.GlobalTable("tool-registry", default=None, partitions=1,
                                     schema=json_values,
                                     on_changelog_event=self._on_changelog_event)
        self.results = app.GlobalTable("tool-results", default=None, schema=json_values)
        registry_topic = app.topic(self.topic_name, allow_empty=True, **raw)
        results_topic = app.topic(self.results_topic_name, allow_empty=True, **raw)

        # A Faust Message: typed with list-or-mapping headers; consumed ones are a list.
        async def poison(message: Any, reason: str) -> None:
            log.warning("poison %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, reason)
            await services.send(OutRecord(
                services.topics.poison, message.key, message.value,
                h.with_context(list(message.headers or []), {
                    h.ORIGINAL_TOPIC: message.topic, h.ORIGINAL_PARTITION: message.partition,
                    h.ORIGINAL_OFFSET: message.offset, h.REASON: reason})))

        @app.agent(registry_topic, name="tool-registry")
        async def registry_agent(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                record = parse_registry_record(message.key, message.value)
                if isinstance(record, Invalid):
                    await poison(message, record.reason)
                    continue
                key = record.entry.key if isinstance(record, Announce) else record.key
                update = registry_update(self.table.get(key), record)
                if update is None:
                    continue
                if update[1] is None:
                    self.table.pop(update[0], None)
                else:
                    self.table[update[0]] = update[1]
                self._entries = None

        @app.agent(results_topic, name="tool-results")
        async def results_agent(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                message = event.message
                parsed = parse_result_record(message.value)
                if isinstance(parsed, Invalid):
                    await poison(message, parsed.reason)
                    continue
                self.results[parsed[0]] = parsed[1].to_json()

    async def _on_changelog_event(self, event: Any) -> None:
        self._entries = None
        self._changed_at = self.services.clock.now_ms()

    def entries(self) -> list[ToolEntry]:
        if self._entries is not None:
            return self._entries
        entries = [ToolEntry.from_json(v) for v in list(self.table.values()) if v]
        if self.services.clock.now_ms() - self._changed_at >= CHANGELOG_SETTLE_MS:
            self._entries = entries
        return entries

    def cached(self, tool: str, arguments: Any) -> CachedResult | None:
        found = self.results.get(cache_key(tool, arguments))
        return CachedResult.from_json(found) if found else None

    async def register(self, entry: ToolEntry) -> None:
        """A tool found by asking the servers is announced on their behalf."""
        from app.contracts.records import OutRecord

        key, value = announce_record(entry)
        await self.services.send(OutRecord(self.topic_name, key, value, []))
