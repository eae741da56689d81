"""A service's cache that obeys the recovery service's cache-control commands (Scenario 5).

The recovery service repairs a corrupted entry by commands on `recovery.cache-control`
(JSON, keyed by cache key): `invalidate` it, `set` it to the authoritative value (then read
it back and answer whether it now holds that value: the source's verifyCacheIntegrity),
`disable` caching for the key for a while (reads go to the database meanwhile: the source's
fallbackToDatabase), `enable` it again.

    cache = RecoveringCache()                 # a dict, or any MutableMapping you pass
    cache.poll()                              # now and then (or cache.start() for a thread)
    user = cache.get("user:42", load=lambda: db.load_user(42))

Every instance of a service reads every command (not as a consumer-group member) from a
look-back window, so an instance started just after a repair still applies it."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Producer

from app.client.control import CommandReader
from app.contracts.values import checksum
from app.contracts.watches import resolve_record
from app.kafka import config as kafka_config
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
TOPIC = "recovery.cache-control"

INVALIDATE = "invalidate"
SET = "set"
DISABLE = "disable"
ENABLE = "enable"
COMMANDS = frozenset({INVALIDATE, SET, DISABLE, ENABLE})
_MISSING = object()


@dataclass(frozen=True)
class CacheCommand:
    command_id: str
    command: str
    key: str
    issued_at_ms: int
    incident_id: str | None = None
    value: Any = None
    version: int | None = None
    ttl_ms: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    checksum: str | None = None  # of `value`, for the read-back verification
    reply_topic: str | None = None  # where the verification answer goes ...
    watch_id: str | None = None  # ... and which watch it ends
    until_ms: int | None = None  # `disable`: until when
    reason: str | None = None
    fallback_to_database: bool = True

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def decode(cls, value: bytes | None) -> CacheCommand:
        try:
            data = orjson.loads(value or b"")
            command = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a cache command: {exc}") from None
        if command.command not in COMMANDS or not isinstance(command.key, str):
            raise ValueError(f"not a cache command: {command.command!r} for {command.key!r}")
        return command


@dataclass(frozen=True)
class Reply:
    topic: str
    key: str
    value: bytes


class RecoveringCache:
    def __init__(self, store: MutableMapping[str, Any] | None = None, *,
                 settings: Settings | None = None, producer: Producer | None = None,
                 lookback_ms: int | None = None, listen: bool = True,
                 keys: Callable[[str], bool] | None = None):
        """`keys`: which cache keys this cache holds (commands for others are not its
        business: services share the cache-control topic); all when None."""
        self.settings = settings or get_settings()
        self.keys = keys
        self.store: MutableMapping[str, Any] = store if store is not None else {}
        self.expires_at: dict[str, int] = {}
        self.disabled_until: dict[str, int] = {}
        self.applied: OrderedDict[str, None] = OrderedDict()
        self.reader: CommandReader | None = None
        self.producer = producer
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        if listen:
            self.producer = producer or Producer(kafka_config.producer_config(self.settings))
            self.reader = CommandReader(
                self.settings, self.settings.topic(TOPIC),
                lookback_ms=lookback_ms if lookback_ms is not None
                else self.settings.cache_disable_ms, name="cache-control")
            for message in self.reader.catch_up():
                self._on_message(message.value())

    # ---- what the service calls ----------------------------------------------------------

    def get(self, key: str, load: Callable[[], Any], *, ttl_ms: int | None = None,
            now_ms: int | None = None) -> Any:
        """The cached value, else `load()` (cached for next time). While caching is
        disabled for the key, always `load()`: the database is the fallback."""
        now = now_ms if now_ms is not None else _now()
        with self._lock:
            if self.is_disabled(key, now):
                return load()
            cached = self.store.get(key, _MISSING)
            if cached is not _MISSING and self.expires_at.get(key, now + 1) > now:
                return cached
        value = load()
        self.put(key, value, ttl_ms=ttl_ms, now_ms=now)
        return value

    def put(self, key: str, value: Any, *, ttl_ms: int | None = None,
            now_ms: int | None = None) -> None:
        now = now_ms if now_ms is not None else _now()
        with self._lock:
            if self.is_disabled(key, now):
                return
            self.store[key] = value
            if ttl_ms:
                self.expires_at[key] = now + ttl_ms
            else:
                self.expires_at.pop(key, None)

    def is_disabled(self, key: str, now_ms: int | None = None) -> bool:
        until = self.disabled_until.get(key)
        if until is None:
            return False
        if (now_ms if now_ms is not None else _now()) >= until:
            del self.disabled_until[key]  # the temporary disabling has run out
            return False
        return True

    # ---- the commands --------------------------------------------------------------------

    def apply(self, command: CacheCommand, now_ms: int | None = None) -> Reply | None:
        """Applies one command; returns the verification answer to send, if one is due. A
        command seen before changes nothing."""
        now = now_ms if now_ms is not None else _now()
        with self._lock:
            if command.command_id in self.applied:
                return None
            self.applied[command.command_id] = None
            if len(self.applied) > 10_000:
                self.applied.popitem(last=False)
            key = command.key
            log.info("cache-control %s %s (%s)", command.command, key, command.reason or "")
            if command.command == INVALIDATE:
                self.store.pop(key, None)
                self.expires_at.pop(key, None)
            elif command.command == SET:
                self.store[key] = command.value
                if command.ttl_ms:
                    self.expires_at[key] = now + command.ttl_ms
                else:
                    self.expires_at.pop(key, None)
                return self._verification(command)
            elif command.command == DISABLE:
                self.store.pop(key, None)
                self.expires_at.pop(key, None)
                self.disabled_until[key] = command.until_ms or now
            else:  # ENABLE
                self.disabled_until.pop(key, None)
            return None

    def _verification(self, command: CacheCommand) -> Reply | None:
        if not (command.reply_topic and command.watch_id):
            return None
        held = self.store.get(command.key, _MISSING)
        found = None if held is _MISSING else checksum(held)
        result = {"key": command.key, "checksum": found,
                  "ok": found is not None and found == command.checksum}
        return Reply(command.reply_topic, command.watch_id,
                     resolve_record(command.watch_id, result))

    def _on_message(self, value: bytes | None) -> None:
        try:
            command = CacheCommand.decode(value)
        except ValueError as exc:
            log.warning("ignoring cache-control record: %s", exc)
            return
        if self.keys is not None and not self.keys(command.key):
            return
        try:
            reply = self.apply(command)
        except Exception as exc:  # the store failed: say so rather than stay silent
            log.error("cache-control %s %s failed: %s", command.command, command.key, exc)
            reply = None
            if command.reply_topic and command.watch_id:
                reply = Reply(command.reply_topic, command.watch_id, resolve_record(
                    command.watch_id, {"key": command.key, "ok": False, "checksum": None,
                                       "error": str(exc)}))
        if reply is not None and self.producer is not None:
            self.producer.produce(reply.topic, key=reply.key.encode(), value=reply.value)
            self.producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Applies the commands that arrived; returns how many records were read."""
        if self.reader is None:
            return 0
        messages = self.reader.poll(timeout)
        for message in messages:
            self._on_message(message.value())
        if messages and self.producer is not None:
            self.producer.flush(10)
        return len(messages)

    def start(self, interval: float = 0.5) -> RecoveringCache:
        """Polls in a background thread until close()."""
        def run() -> None:
            while not self._stop.is_set():
                self.poll(interval)

        self._thread = threading.Thread(target=run, name="cache-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.reader is not None:
            self.reader.close()
        if self.producer is not None:
            self.producer.flush(10)


def _now() -> int:
    return int(time.time() * 1000)
