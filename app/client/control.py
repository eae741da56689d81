"""Control commands the recovery service sends on `recovery.control` (JSON, keyed by the
target: a consumer group, or a network partition's id), and what a consumer does about them.

Scenario 4 (consumer crash): `stop`, then `restart_safe_mode` with the source's options
(skipPoisonMessages, enableDebugLogging, reduceParallelism) and the poisoned records to
skip, then `resume` once the recovery watch has confirmed the consumer is processing again.
Scenario 6 (network partition): `enter_partitioned_mode`, `enter_degraded_mode`,
`resume_normal_operation` for the components of a partition.

`ConsumerMode` is the pure state a consumer wrapper keeps; `ControlChannel` reads the
commands addressed to one target, starting a look-back window in the past so that a consumer
(re)started just after its commands were sent still obeys them."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.contracts import headers as h
from app.kafka import config as kafka_config
from app.settings import Settings

log = logging.getLogger(__name__)
TOPIC = "recovery.control"

STOP = "stop"
RESTART_SAFE_MODE = "restart_safe_mode"
RESUME = "resume"
ENTER_PARTITIONED_MODE = "enter_partitioned_mode"
ENTER_DEGRADED_MODE = "enter_degraded_mode"
RESUME_NORMAL_OPERATION = "resume_normal_operation"
CONSUMER_COMMANDS = frozenset({STOP, RESTART_SAFE_MODE, RESUME})

# The source's restartConsumerInSafeMode options.
SAFE_MODE_OPTIONS = {"skipPoisonMessages": True, "enableDebugLogging": True,
                     "reduceParallelism": True}

RUNNING = "running"
STOPPED = "stopped"
SAFE_MODE = "safe_mode"
APPLIED_LIMIT = 200
SKIP_LIMIT = 10_000


@dataclass(frozen=True, order=True)
class RecordId:
    """Where a record was first read: a redelivered copy carries the original position in
    its context headers, so it is recognised too."""

    topic: str
    partition: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def record_id_of(message: Any) -> RecordId:
    headers = message.headers() or []
    topic = h.header_value(headers, h.ORIGINAL_TOPIC)
    if topic:
        return RecordId(topic, h.header_int(headers, h.ORIGINAL_PARTITION) or 0,
                        h.header_int(headers, h.ORIGINAL_OFFSET) or 0)
    return RecordId(message.topic(), message.partition(), message.offset())


@dataclass(frozen=True)
class ControlCommand:
    command_id: str
    command: str
    target: str
    issued_at_ms: int
    incident_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    skip: tuple[RecordId, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "command": self.command, "target": self.target,
                "issued_at_ms": self.issued_at_ms, "incident_id": self.incident_id,
                "options": self.options, "skip": [s.to_json() for s in self.skip]}

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def decode(cls, value: bytes | None) -> ControlCommand:
        """Raises ValueError for anything that is not a command."""
        try:
            data = orjson.loads(value or b"")
            return cls(command_id=str(data["command_id"]), command=str(data["command"]),
                       target=str(data["target"]), issued_at_ms=int(data["issued_at_ms"]),
                       incident_id=data.get("incident_id"),
                       options=dict(data.get("options") or {}),
                       skip=tuple(RecordId(str(s["topic"]), int(s["partition"]),
                                           int(s["offset"])) for s in data.get("skip") or ()))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a control command: {exc}") from None


@dataclass(frozen=True)
class ConsumerMode:
    """What the control commands obeyed so far make of a consumer."""

    state: str = RUNNING
    skip: frozenset[RecordId] = frozenset()
    debug_logging: bool = False
    reduced_parallelism: bool = False
    last_command_id: str | None = None
    applied: tuple[str, ...] = ()

    def apply(self, command: ControlCommand) -> ConsumerMode:
        """The mode after a command. A command seen before (read again after a restart, or
        sent twice after a crash of the service) changes nothing."""
        if command.command not in CONSUMER_COMMANDS or command.command_id in self.applied:
            return self
        seen = replace(self, applied=(*self.applied, command.command_id)[-APPLIED_LIMIT:],
                       last_command_id=command.command_id)
        if command.command == STOP:
            return replace(seen, state=STOPPED)
        if command.command == RESTART_SAFE_MODE:
            options = {**SAFE_MODE_OPTIONS, **command.options}
            skip = self.skip | frozenset(command.skip) if options["skipPoisonMessages"] \
                else self.skip
            if len(skip) > SKIP_LIMIT:
                skip = frozenset(sorted(skip)[-SKIP_LIMIT:])
            return replace(seen, state=SAFE_MODE, skip=skip,
                           debug_logging=bool(options["enableDebugLogging"]),
                           reduced_parallelism=bool(options["reduceParallelism"]))
        # RESUME: normal operation again; poisoned records stay skipped.
        return replace(seen, state=RUNNING, debug_logging=False, reduced_parallelism=False)

    def skips(self, record: RecordId) -> bool:
        return record in self.skip


def control_command(command: str, target: str, *, command_id: str | None = None,
                    incident_id: str | None = None, options: dict[str, Any] | None = None,
                    skip: tuple[RecordId, ...] = (), issued_at_ms: int | None = None
                    ) -> ControlCommand:
    return ControlCommand(command_id or str(uuid.uuid4()), command, target,
                          issued_at_ms if issued_at_ms is not None else int(time.time() * 1000),
                          incident_id, dict(options or {}), skip)


class CommandReader:
    """Reads a command topic, every partition, from `lookback_ms` ago, not as a group
    member: every instance of a service must see every command. Used for `recovery.control`
    (ControlChannel) and `recovery.cache-control` (app/client/cache.py)."""

    def __init__(self, settings: Settings, topic: str, *, lookback_ms: int, name: str,
                 open_timeout: float = 30.0):
        self.topic = topic
        self.consumer = Consumer(kafka_config.consumer_config(
            settings, f"{name}.{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": False}))
        self.active = False
        # Partitions with commands from within the look-back, and their end offsets then.
        self.pending: dict[int, int] = {}
        since = int(time.time() * 1000) - lookback_ms
        deadline = time.monotonic() + open_timeout
        while True:
            try:
                starts = self._starts(since)
                break
            except LookupError as exc:
                log.warning("%s: its commands are not obeyed", exc)
                return
            except Exception as exc:  # a topic just created may have no leader yet
                if time.monotonic() > deadline:
                    # A service must run even when commands are unavailable.
                    log.warning("command topic %s unavailable (%s): its commands are not "
                                "obeyed", self.topic, exc)
                    return
                time.sleep(0.5)
        # A partition with nothing in the look-back starts at its end as read now, not at
        # OFFSET_END: that is resolved only when the fetcher starts, after assign() has
        # returned, and a command sent in between would be skipped.
        self.consumer.assign([TopicPartition(self.topic, tp.partition, tp.offset)
                              for tp in starts])
        self.active = True

    def _starts(self, since_ms: int) -> list[TopicPartition]:
        found = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if found is None or not found.partitions:
            raise LookupError(f"command topic {self.topic} not found")
        if found.error is not None:
            raise RuntimeError(str(found.error))
        wanted = [TopicPartition(self.topic, p, since_ms) for p in sorted(found.partitions)]
        starts = self.consumer.offsets_for_times(wanted, timeout=10)
        self.pending = {}
        for tp in starts:
            if tp.error is not None:
                raise RuntimeError(str(tp.error))
            end = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            if 0 <= tp.offset < end:
                self.pending[tp.partition] = end
            else:
                tp.offset = end
        return starts

    def poll(self, timeout: float = 0.0, limit: int = 100) -> list[Any]:
        """Messages that arrived (confluent-kafka Messages), waiting at most `timeout`."""
        if not self.active:
            return []
        messages: list[Any] = []
        wait = timeout
        while len(messages) < limit:
            message = self.consumer.poll(wait)
            wait = 0.0
            if message is None:
                break
            if not message.error():
                messages.append(message)
        return messages

    def catch_up(self, timeout: float = 15.0) -> list[Any]:
        """The messages already there when the reader opened (within the look-back)."""
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            positions = self.consumer.position(
                [TopicPartition(self.topic, p) for p in self.pending])
            if all(tp.offset >= self.pending[tp.partition] for tp in positions):
                break
            messages += self.poll(0.2)
        return messages

    def close(self) -> None:
        self.consumer.close()


class ControlChannel:
    """The commands for one target (a consumer group) on `recovery.control`, read from
    `lookback_ms` ago."""

    def __init__(self, settings: Settings, target: str, *, lookback_ms: int,
                 topic: str | None = None):
        self.target = target
        self.reader = CommandReader(settings, topic or settings.topic(TOPIC),
                                    lookback_ms=lookback_ms, name=f"{target}.control")

    def _commands(self, messages: list[Any]) -> list[ControlCommand]:
        commands: list[ControlCommand] = []
        for message in messages:
            if (message.key() or b"").decode(errors="replace") != self.target:
                continue
            try:
                command = ControlCommand.decode(message.value())
            except ValueError as exc:
                log.warning("ignoring %s[%d]@%d: %s", message.topic(), message.partition(),
                            message.offset(), exc)
                continue
            if command.target == self.target:
                commands.append(command)
        return commands

    def poll(self, timeout: float = 0.0) -> list[ControlCommand]:
        return self._commands(self.reader.poll(timeout))

    def catch_up(self, timeout: float = 15.0) -> list[ControlCommand]:
        return self._commands(self.reader.catch_up(timeout))

    def close(self) -> None:
        self.reader.close()
