"""A confluent-kafka consumer loop that reports a handler's exceptions as failure events,
consumes its redelivery topic, sends heartbeats and acknowledges successful redeliveries."""

from __future__ import annotations

import logging
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from app.client import control as ctl
from app.client.reporter import FailureReporter
from app.contracts import headers as h
from app.contracts.topics import redelivery_topic
from app.kafka import config as kafka_config
from app.kafka.topics import wait_for_leaders
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
Handler = Callable[[Message], None]
# Restart in safe mode with reduced parallelism: records are handled one at a time anyway;
# what shrinks is how much is fetched and buffered ahead of the handler.
SAFE_MODE_CONSUMER_CONFIG: dict[str, Any] = {
    "max.partition.fetch.bytes": 65536, "fetch.max.bytes": 1048576,
    "queued.max.messages.kbytes": 1024, "queued.min.messages": 1,
}


def ensure_topic(bootstrap: str, topic: str, partitions: int = 3, *,
                 admin_settings: dict[str, Any] | None = None, timeout: float = 30.0) -> None:
    """Creates the topic if missing and returns once every partition has a leader: a
    consumer that subscribes earlier finds it "not available" and, with librdkafka's
    defaults, looks again only at the next metadata refresh, minutes later. The address is
    reached with the environment's security settings unless admin_settings say otherwise."""
    admin = AdminClient({**kafka_config.admin_config(kafka_config.for_bootstrap(bootstrap)),
                         **(admin_settings or {})})
    if topic not in admin.list_topics(timeout=10).topics:
        for future in admin.create_topics([NewTopic(topic, partitions)]).values():
            try:
                future.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    wait_for_leaders(admin, [topic], timeout)


class SeenReplays:
    """Replay ids already handled, so a dead letter replayed twice is delivered once.
    Bounded: the oldest ids are forgotten first."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, replay_id: str) -> bool:
        if replay_id in self._ids:
            return False
        self._ids[replay_id] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True


class RecoveringConsumer:
    def __init__(self, group: str, topics: list[str], *, service: str,
                 settings: Settings | None = None, reporter: FailureReporter | None = None,
                 heartbeat_interval: float = 15.0, consumer_config: dict[str, Any] | None = None,
                 failure_kind: str = "PROCESSING_FAILED", error_type: str = "handler_exception",
                 control: bool = True, safe_mode_config: dict[str, Any] | None = None,
                 report_timeout: float = 10.0):
        self.settings = settings or get_settings()
        self.group = group
        self.service = service
        self.reporter = reporter or FailureReporter(self.settings)
        self.redelivery = redelivery_topic(group)
        self.topics = [*topics, self.redelivery]
        self.heartbeat_interval = heartbeat_interval
        self.failure_kind = failure_kind
        self.error_type = error_type
        self.events_processed = 0
        self.failures_reported = 0
        self.replays = SeenReplays()
        self._last_beat = 0.0
        self._stopped = False
        self._until: Callable[[], bool] | None = None
        # How long one wait for the broker's acknowledgement of a report lasts before the
        # wait is logged and the consumer polled again.
        self.report_timeout = report_timeout
        # Control commands (Scenario 4): stop, restart in safe mode, resume.
        self.log = log.getChild(group)
        self.mode = ctl.ConsumerMode()
        self.skipped = 0
        self.restarts = 0
        self._consumer_config = dict(consumer_config or {})
        self._safe_mode_config = {**SAFE_MODE_CONSUMER_CONFIG, **(safe_mode_config or {})}
        ensure_topic(self.settings.kafka_bootstrap_servers, self.redelivery,
                     admin_settings=kafka_config.admin_config(self.settings))
        self.control = ctl.ControlChannel(self.settings, group,
                                          lookback_ms=self.settings.recovery_watch_ms) \
            if control else None
        if self.control is not None:
            # Commands sent before this consumer started (it replaces one that crashed).
            for command in self.control.catch_up():
                self.mode = self.mode.apply(command)
            self.log.setLevel(logging.DEBUG if self.mode.debug_logging else logging.NOTSET)
        self.consumer = self._new_consumer()

    def _new_consumer(self) -> Consumer:
        overrides = {**self._consumer_config}
        if self.mode.reduced_parallelism:
            overrides.update(self._safe_mode_config)
        consumer = Consumer(kafka_config.consumer_config(self.settings, self.group, **overrides))
        consumer.subscribe(self.topics)
        return consumer

    def obey_control(self, timeout: float = 0.0) -> None:
        """Applies the control commands that arrived: `stop` pauses consumption;
        `restart_safe_mode` restarts the Kafka consumer (event count from zero) skipping the
        poisoned records, with debug logging and reduced fetch sizes; `resume` restarts it
        in normal mode."""
        if self.control is None:
            return
        for command in self.control.poll(timeout):
            before = self.mode
            self.mode = self.mode.apply(command)
            if self.mode is before:
                continue
            self.log.warning("control command %s (%s) for %s", command.command,
                             command.command_id, self.group)
            if command.command in (ctl.RESTART_SAFE_MODE, ctl.RESUME):
                self._restart()

    def _restart(self) -> None:
        self.log.setLevel(logging.DEBUG if self.mode.debug_logging else logging.NOTSET)
        try:
            self.consumer.close()
            self.consumer = self._new_consumer()
        except Exception as exc:
            # The source escalates a failed restart: a "failed" beat ends the watch so.
            self.log.error("restart of %s failed: %s", self.group, exc)
            self.beat(status="failed", force=True)
            raise
        self.restarts += 1
        self.events_processed = 0
        self.beat(force=True)

    def handle(self, message: Message, handler: Handler) -> None:
        if self.mode.skip and self.mode.skips(ctl.record_id_of(message)):
            self.skipped += 1
            self.log.warning("safe mode: skipping poisoned record %s", ctl.record_id_of(message))
            return
        self.log.debug("handling %s[%d]@%d", message.topic(), message.partition(),
                       message.offset())
        replay_id = h.header_value(message.headers(), h.REPLAY_ID)
        if replay_id and not self.replays.first_time(replay_id):
            return
        incident = h.header_value(message.headers(), h.INCIDENT_ID)
        try:
            handler(message)
        except Exception as exc:
            self.failures_reported += 1
            self.reporter.report(
                kind=self.failure_kind, error_type=self.error_type, service=self.service,
                message=f"{type(exc).__name__}: {exc}", record=message,
                consumer_group=self.group, dispatch_target=self.redelivery,
                stack_trace="".join(traceback.format_exception(exc)), severity="ERROR",
                detail=("ConsumerCrashed", {"consumer_id": self.group,
                                            "error_type": type(exc).__name__,
                                            "events_processed": self.events_processed}),
            )
            return
        self.events_processed += 1
        if incident:
            self.reporter.acknowledge(incident, replay_id)

    def beat(self, status: str = "healthy", force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= self.heartbeat_interval:
            self.reporter.heartbeat(self.group, status=status,
                                    events_processed=self.events_processed,
                                    control_id=self.mode.last_command_id)
            self._last_beat = now

    def poll_once(self, handler: Handler, timeout: float = 0.5) -> Message | None:
        self.obey_control()
        if self.mode.state == ctl.STOPPED:
            self.beat(status=ctl.STOPPED)
            time.sleep(timeout)
            return None
        self.beat()
        message = self.consumer.poll(timeout)
        if message is None:
            return None
        if message.error():
            log.warning("consumer error: %s", message.error())
            return None
        self.handle(message, handler)
        if self.reports_confirmed(message):
            self.commit(message)
        return message

    def commit(self, message: Message) -> bool:
        """Commits past `message`. A refused commit (the group coordinator moving while a
        broker restarts, a rebalance) does not stop the service: the offset stays where it
        was, the next commit on the partition covers this record too, and if none comes
        the record is read again, which the handling tolerates (at-least-once)."""
        try:
            self.consumer.commit(message=message, asynchronous=False)
            return True
        except KafkaException as exc:
            log.warning("%s[%d]@%d: commit refused (%s); the offset stays, a later commit "
                        "covers it", message.topic(), message.partition(), message.offset(),
                        exc.args[0] if exc.args else exc)
            return False

    def reports_confirmed(self, message: Message) -> bool:
        """Waits until the broker has acknowledged the record's failure report (or its
        acknowledgement), so the offset never passes a report that could still be lost.
        Meanwhile the consumer is polled with its partitions paused, so it stays in its
        group and reads nothing further. False when stopped first: the offset is not
        committed and the record is read again after a restart."""
        if self.reporter.confirm(self.report_timeout):
            return True
        self.consumer.pause(self.consumer.assignment())
        try:
            while not self._stop_requested():
                self.log.warning("report for %s[%d]@%d not acknowledged by the broker; "
                                 "holding its offset", message.topic(), message.partition(),
                                 message.offset())
                polled = self.consumer.poll(0)
                if polled is not None and not polled.error():
                    # A partition assigned by a rebalance meanwhile is not paused: put the
                    # record back to be read after the wait.
                    self._seek_back(polled)
                    self.consumer.pause(self.consumer.assignment())
                if self.reporter.confirm(self.report_timeout):
                    return True
            self._seek_back(message)  # not committed, and not passed by a later commit
            return False
        finally:
            # Paused partitions drop what was fetched; resumed, they go on from the record
            # after the last one handed out, so nothing is skipped.
            self.consumer.resume(self.consumer.assignment())

    def _seek_back(self, message: Message) -> None:
        try:
            self.consumer.seek(TopicPartition(message.topic(), message.partition(),
                                              message.offset()))
        except KafkaException as exc:  # no longer assigned: its next owner reads it
            self.log.warning("could not seek back to %s[%d]@%d: %s", message.topic(),
                             message.partition(), message.offset(), exc)

    def _stop_requested(self) -> bool:
        return self._stopped or bool(self._until and self._until())

    def run(self, handler: Handler, *, until: Callable[[], bool] | None = None) -> None:
        self._until = until
        try:
            while not self._stop_requested():
                self.poll_once(handler)
        finally:
            self.close()

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self.reporter.flush(10)
        self.consumer.close()
        if self.control is not None:
            self.control.close()
