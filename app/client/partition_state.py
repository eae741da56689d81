"""For the components of a network partition (Scenario 6): the mode the recovery service
puts them in, and a log of what each side writes while partitioned, so the sides' states can
be merged when the partition heals.

    log = PartitionStateLog(side="eu-west")
    log.write("eu-west-1", key="order:7", value={...}, version=12)

    mode = PartitionModeListener("eu-west-1")      # commands on recovery.control
    mode.poll(); mode.mode.state                   # normal, autonomous or degraded
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from confluent_kafka import Producer

from app.client import control as ctl
from app.kafka import config as kafka_config
from app.settings import Settings, get_settings

TOPIC = "recovery.partition-state"
NORMAL = "normal"
AUTONOMOUS = "autonomous"
DEGRADED = "degraded"


class PartitionStateLog:
    def __init__(self, *, side: str, settings: Settings | None = None,
                 producer: Producer | None = None):
        self.side = side
        self.settings = settings or get_settings()
        self.producer = producer or Producer(kafka_config.producer_config(self.settings))
        self.topic = self.settings.topic(TOPIC)

    def write(self, partition_id: str, *, key: str, value: Any, version: int,
              updated_at_ms: int | None = None) -> None:
        """One versioned write this side made while partitioned."""
        record = {"side": self.side, "key": key, "value": value, "version": version,
                  "updated_at": updated_at_ms if updated_at_ms is not None
                  else int(time.time() * 1000)}
        self.producer.produce(self.topic, key=partition_id.encode(), value=orjson.dumps(record))
        self.producer.poll(0)

    def flush(self, timeout: float = 10) -> int:
        return self.producer.flush(timeout)


@dataclass(frozen=True)
class PartitionMode:
    state: str = NORMAL
    configuration: dict[str, Any] = field(default_factory=dict)
    applied: tuple[str, ...] = ()

    def apply(self, command: ctl.ControlCommand) -> PartitionMode:
        if command.command_id in self.applied:
            return self
        seen = replace(self, applied=(*self.applied, command.command_id)[-ctl.APPLIED_LIMIT:])
        configuration = dict(command.options.get("configuration") or {})
        if command.command == ctl.ENTER_PARTITIONED_MODE:
            return replace(seen, state=AUTONOMOUS, configuration=configuration)
        if command.command == ctl.ENTER_DEGRADED_MODE:
            return replace(seen, state=DEGRADED, configuration=configuration)
        if command.command == ctl.RESUME_NORMAL_OPERATION:
            return replace(seen, state=NORMAL, configuration={})
        return self


class PartitionModeListener:
    """Follows the mode commands for one partition id (from a look-back window)."""

    def __init__(self, partition_id: str, *, settings: Settings | None = None,
                 lookback_ms: int | None = None):
        settings = settings or get_settings()
        self.channel = ctl.ControlChannel(
            settings, partition_id,
            lookback_ms=lookback_ms if lookback_ms is not None else settings.partition_watch_ms)
        self.mode = PartitionMode()
        for command in self.channel.catch_up():
            self.mode = self.mode.apply(command)

    def poll(self, timeout: float = 0.0) -> PartitionMode:
        for command in self.channel.poll(timeout):
            self.mode = self.mode.apply(command)
        return self.mode

    def close(self) -> None:
        self.channel.close()
