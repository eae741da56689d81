"""The consumer wrapper for a Faust agent: what RecoveringConsumer does for a confluent-kafka
loop (report a handler's exception as a failure event, consume the redelivery topic, send
heartbeats, acknowledge successful redeliveries), for a service written with Faust.

    recovering = RecoveringAgent(app, group="billing", service="billing")

    @recovering.agent("orders")
    async def handle(event: faust.Event) -> None:
        ...  # raise to report a failure; return to succeed

The service's agent then reads both its own topics and `<group>.redelivery`.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from app.client import control as ctl
from app.client.consumer import SeenReplays, ensure_topic
from app.client.reporter import FailureReporter
from app.contracts import headers as h
from app.contracts.topics import redelivery_topic
from app.kafka import config as kafka_config
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
EventHandler = Callable[[faust.EventT], Awaitable[None]]
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


class FaustRecord:
    """A Faust message seen through confluent-kafka's Message accessors, which is what the
    reporter reads the failed record from."""

    def __init__(self, message: Any):
        self._message = message

    def topic(self) -> str:
        return self._message.topic

    def partition(self) -> int:
        return self._message.partition

    def offset(self) -> int:
        return self._message.offset

    def key(self) -> bytes | None:
        return self._message.key

    def value(self) -> bytes | None:
        return self._message.value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._message.headers or [])

    def timestamp(self) -> tuple[int, int]:
        stamp = self._message.timestamp
        return (1, int(stamp * 1000)) if stamp else (0, 0)


class RecoveringAgent:
    def __init__(self, app: faust.App, *, group: str, service: str,
                 settings: Settings | None = None, reporter: FailureReporter | None = None,
                 heartbeat_interval: float = 15.0, failure_kind: str = "PROCESSING_FAILED",
                 error_type: str = "handler_exception", control: bool = True,
                 control_interval: float = 0.5):
        self.app = app
        self.settings = settings or get_settings()
        self.group = group
        self.service = service
        self.reporter = reporter or FailureReporter(self.settings)
        self.redelivery = redelivery_topic(group)
        self.failure_kind = failure_kind
        self.error_type = error_type
        self.events_processed = 0
        self.failures_reported = 0
        self.replays = SeenReplays()
        ensure_topic(self.settings.kafka_bootstrap_servers, self.redelivery,
                     admin_settings=kafka_config.admin_config(self.settings))
        app.timer(heartbeat_interval)(self._beat)
        # Control commands (Scenario 4, app/client/control.py): `stop` holds the handler
        # (the agent reads no further); `restart_safe_mode` skips the poisoned records, logs
        # at debug level and handles one record at a time across the agent's instances,
        # with the event count from zero; `resume` is normal operation again.
        self.log = log.getChild(group)
        self.mode = ctl.ConsumerMode()
        self.skipped = 0
        self._running = asyncio.Event()
        self._running.set()
        self._one_at_a_time = asyncio.Lock()
        self.control = ctl.ControlChannel(self.settings, group,
                                          lookback_ms=self.settings.recovery_watch_ms) \
            if control else None
        if self.control is not None:
            self.apply_commands(self.control.catch_up(), restarting=False)
            app.timer(control_interval)(self._obey_control)

    async def _beat(self) -> None:
        self.reporter.heartbeat(self.group, events_processed=self.events_processed,
                                status=ctl.STOPPED if self.mode.state == ctl.STOPPED
                                else "healthy", control_id=self.mode.last_command_id)

    async def _obey_control(self) -> None:
        if self.control is None:
            return
        commands = await asyncio.get_running_loop().run_in_executor(None, self.control.poll,
                                                                    0.0)
        if self.apply_commands(commands):
            await self._beat()

    def apply_commands(self, commands: list[ctl.ControlCommand], *,
                       restarting: bool = True) -> bool:
        """Applies control commands; True when the mode changed."""
        changed = False
        for command in commands:
            before = self.mode
            self.mode = self.mode.apply(command)
            if self.mode is before:
                continue
            changed = True
            self.log.warning("control command %s (%s) for %s", command.command,
                             command.command_id, self.group)
            if restarting and command.command in (ctl.RESTART_SAFE_MODE, ctl.RESUME):
                self.events_processed = 0  # a restart: the count starts again
        if self.mode.state == ctl.STOPPED:
            self._running.clear()
        else:
            self._running.set()
        self.log.setLevel(logging.DEBUG if self.mode.debug_logging else logging.NOTSET)
        return changed

    def agent(self, *topics: str, name: str | None = None
              ) -> Callable[[EventHandler], EventHandler]:
        """Registers a Faust agent over `topics` and the redelivery topic that calls the
        handler once per record, with the recovery behaviour around it."""
        channel = self.app.topic(*topics, self.redelivery, allow_empty=True, **RAW)

        def register(handler: EventHandler) -> EventHandler:
            async def recovering_agent(stream: faust.StreamT) -> None:
                async for event in stream.events():
                    await self.handle(event, handler)

            self.app.agent(channel, name=name or f"{self.group}-{handler.__name__}")(
                recovering_agent)
            return handler

        return register

    async def handle(self, event: faust.EventT, handler: EventHandler) -> None:
        await self._running.wait()  # stopped: hold here until restarted or resumed
        record = FaustRecord(event.message)
        if self.mode.skip and self.mode.skips(ctl.record_id_of(record)):
            self.skipped += 1
            self.log.warning("safe mode: skipping poisoned record %s", ctl.record_id_of(record))
            return
        self.log.debug("handling %s[%d]@%d", record.topic(), record.partition(),
                       record.offset())
        if self.mode.reduced_parallelism:
            async with self._one_at_a_time:
                await self._handle(record, event, handler)
        else:
            await self._handle(record, event, handler)

    async def _handle(self, record: FaustRecord, event: faust.EventT,
                      handler: EventHandler) -> None:
        replay_id = h.header_value(record.headers(), h.REPLAY_ID)
        if replay_id and not self.replays.first_time(replay_id):
            return
        incident = h.header_value(record.headers(), h.INCIDENT_ID)
        try:
            await handler(event)
        except Exception as exc:
            self.failures_reported += 1
            self.reporter.report(
                kind=self.failure_kind, error_type=self.error_type, service=self.service,
                message=f"{type(exc).__name__}: {exc}", record=record,  # type: ignore[arg-type]
                consumer_group=self.group, dispatch_target=self.redelivery,
                stack_trace="".join(traceback.format_exception(exc)), severity="ERROR",
                detail=("ConsumerCrashed", {"consumer_id": self.group,
                                            "error_type": type(exc).__name__,
                                            "events_processed": self.events_processed}))
            # The offset is committed after this returns: the report must be durable first.
            await self._confirm(record)
            return
        self.events_processed += 1
        if incident:
            self.reporter.acknowledge(incident, replay_id)
            await self._confirm(record)

    async def _confirm(self, record: FaustRecord) -> None:
        """Returns once the broker has acknowledged the reports sent so far: Faust acks the
        record when the handler returns, and its offset must not pass a report that could
        still be lost. While the broker is unreachable this agent reads nothing further; a
        worker stopped meanwhile cancels the wait, the record is not acked and is read
        again after the restart."""
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, self.reporter.confirm, 10):
            self.log.warning("report for %s[%d]@%d not acknowledged by the broker; holding "
                             "its offset", record.topic(), record.partition(), record.offset())
