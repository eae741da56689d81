"""What the stages and the strategies share, built once by the worker: configuration, the
codec, the policies (loaded once), topic names, the clock, the outbox, and the two questions
the pipeline asks of the cluster (does a topic exist; which dead letters has a group)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.contracts.records import OutRecord, RawRecord
from app.pipeline.health import WatchSettings
from app.pipeline.outbox import Outbox
from app.pipeline.strategy import StrategyServices
from app.policy.watchdog import WatchdogPolicy
from app.settings import Settings

TopicExists = Callable[[str], Awaitable[bool]]
DeadLetterScan = Callable[[str], Awaitable[list[RawRecord]]]
# One record read again by its position (topic, partition, offset); None if it is gone.
RecordReader = Callable[[str, int, int], Awaitable[RawRecord | None]]
# Whether a consumer group is healthy at a time in ms (its heartbeats; unknown groups are).
ConsumerHealthy = Callable[[str | None, int], bool]


def watch_settings(settings: Settings) -> WatchSettings:
    return WatchSettings(check_interval_ms=settings.health_check_interval_ms,
                         window_ms=settings.recovery_watch_ms,
                         stale_after_ms=settings.heartbeat_stale_ms)


@dataclass
class Services(StrategyServices):
    outbox: Outbox
    topic_exists: TopicExists
    scan_dead_letters: DeadLetterScan
    read_record: RecordReader
    consumer_healthy: ConsumerHealthy
    watchdog: WatchdogPolicy

    async def send(self, record: OutRecord) -> None:
        await self.outbox.send(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str,
                   **fields: Any) -> dict[str, Any]:
        return await self.outbox.emit(event_type, incident_id, step_id=step_id, **fields)
