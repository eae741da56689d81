"""Oversized messages in the client API: a producer that makes any payload fit its topic
(compression, fragmentation, claim-check reference), a confluent-kafka consumer and a Faust
helper that give the messages back whole, and the report a producer sends when a record was
too large for its topic (the worker then re-publishes it through the same strategies).

    producer = LargeMessageProducer()
    producer.produce("orders", big_payload, key=b"order-1", headers=[("type", b"invoice")])
    producer.flush()

    consumer = ReassemblingConsumer("billing", ["orders"])
    consumer.run(lambda message: handle(message.key(), message.value(), message.headers()))

A reassembled message is delivered once, with its original key and headers; its value is a
bytes-like object (a bytearray for a fragmented one: it is handed over in the buffer it was
assembled in, not copied). See docs/oversized-messages.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from app.client.reporter import FailureReporter
from app.contracts import headers as h
from app.kafka import config as kafka_config
from app.oversize import headers as oh
from app.oversize import policy as op
from app.oversize.assembler import Outcome
from app.oversize.configured import limits_from_settings, policy_for, store_from_settings
from app.oversize.encoder import Encoded, MessageTooLarge, encode
from app.oversize.offsets import OffsetTracker
from app.oversize.reassembly import Reassembler
from app.oversize.records import Incoming, Rejected, Whole
from app.oversize.store import ClaimCheckStore
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
# librdkafka's default message.max.bytes: a record it will send at all.
PRODUCER_MAX_BYTES = 1_000_000
# Fragments moved to the dead-letter or poison topic gain context headers, so they may be a
# little above what was produced; those topics take 8 MB (topics/topics.toml).
MOVED_MAX_BYTES = 8_000_000

__all__ = ["LargeMessage", "LargeMessageProducer", "MessageTooLarge", "ReassemblingConsumer",
           "FaustReassembler", "TopicLimits", "report_message_too_large"]


def _ignore(count: int) -> None:
    return None


class TopicLimits:
    """A topic's max.message.bytes, read once from the cluster (None if unreadable)."""

    def __init__(self, settings: Settings, admin: AdminClient | None = None):
        self.settings = settings
        self.admin = admin or AdminClient(kafka_config.admin_config(settings))
        self._known: dict[str, int | None] = {}

    def of(self, topic: str) -> int | None:
        if topic not in self._known:
            self._known[topic] = self._describe(topic)
        return self._known[topic]

    def _describe(self, topic: str) -> int | None:
        try:
            futures = self.admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC,
                                                                  topic)])
            configs = next(iter(futures.values())).result(timeout=15)
            entry = configs.get("max.message.bytes")
            return int(entry.value) if entry is not None and entry.value else None
        except (KafkaException, ValueError, TimeoutError) as exc:
            log.warning("max.message.bytes of %s unreadable (%s); using %d", topic, exc,
                        self.settings.oversize_max_message_bytes)
            return None


class LargeMessageProducer:
    """Produces payloads of any size: as they are when they fit, else through the topic's
    strategies. Raises MessageTooLarge (listing what was attempted) when none applies."""

    def __init__(self, settings: Settings | None = None, *, producer: Producer | None = None,
                 store: ClaimCheckStore | None = None,
                 producer_config: dict[str, Any] | None = None,
                 limits: TopicLimits | None = None):
        self.settings = settings or get_settings()
        config = kafka_config.producer_config(self.settings, **(producer_config or {}))
        self.producer = producer or Producer(config)
        self.max_request = int(config.get("message.max.bytes", PRODUCER_MAX_BYTES))
        self.store = store if store is not None else store_from_settings(self.settings)
        self.limits = limits or TopicLimits(self.settings)

    def limit_for(self, topic: str) -> int:
        topic_limit = self.limits.of(topic) or self.settings.oversize_max_message_bytes
        return op.effective_limit(topic_limit, self.max_request, policy_for(self.settings, topic))

    def encode(self, topic: str, value: bytes | bytearray | memoryview, key: bytes | None = None,
               headers: h.HeadersArg = None, *, message_id: str | None = None) -> Encoded:
        return encode(topic, key, value, headers, limit=self.limit_for(topic),
                      policy=policy_for(self.settings, topic), message_id=message_id,
                      store=self.store)

    def produce(self, topic: str, value: bytes | bytearray | memoryview,
                key: bytes | None = None, headers: h.HeadersArg = None, *,
                message_id: str | None = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> Encoded:
        encoded = self.encode(topic, value, key, headers, message_id=message_id)
        for record in encoded.records:
            self._send(record.topic, record.key, record.value, record.headers, on_delivery)
        return encoded

    def _send(self, topic: str, key: bytes | None, value: Any, headers: h.Headers,
              on_delivery: Callable[[Any, Any], None] | None) -> None:
        payload = bytes(value) if isinstance(value, memoryview | bytearray) else value
        while True:
            try:
                self.producer.produce(topic, key=key, value=payload, headers=headers,
                                      on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float = 60) -> int:
        return self.producer.flush(timeout)


class LargeMessage:
    """A whole message, with confluent-kafka Message's accessors (so handlers written for a
    Message, and the failure reporter, take it as it is)."""

    def __init__(self, whole: Whole):
        self.whole = whole

    def topic(self) -> str:
        return self.whole.topic

    def partition(self) -> int:
        return self.whole.partition

    def offset(self) -> int:
        return self.whole.offset

    def key(self) -> bytes | None:
        return self.whole.key

    def value(self) -> bytes | bytearray | None:
        return self.whole.value

    def headers(self) -> h.Headers:
        return list(self.whole.headers)

    def timestamp(self) -> tuple[int, int]:
        stamp = self.whole.timestamp_ms
        return (TIMESTAMP_CREATE_TIME, stamp) if stamp is not None else (0, -1)

    def error(self) -> None:
        return None

    @property
    def message_id(self) -> str | None:
        return self.whole.message_id

    @property
    def strategy(self) -> str | None:
        return self.whole.strategy

    @property
    def first_offset(self) -> int:
        return self.whole.first_offset

    def __repr__(self) -> str:
        size = len(self.whole.value or b"")
        return (f"LargeMessage({self.whole.topic}[{self.whole.partition}]@"
                f"{self.whole.first_offset}..{self.whole.offset}, {size} bytes, "
                f"{self.whole.strategy or 'plain'})")


def incoming_of(message: Any) -> Incoming:
    kind, stamp = message.timestamp()
    return Incoming(message.topic(), message.partition(), message.offset(),
                    stamp if kind else None, message.key(), message.value(),
                    list(message.headers() or []))


def rejected_records(rejected: Rejected, group: str | None, dlq: str, poison: str
                     ) -> list[tuple[str, bytes | None, bytes | None, h.Headers]]:
    """The rejected records, byte for byte, with context headers (as the worker moves them)."""
    topic = dlq if rejected.destination == "dlq" else poison
    return [(topic, r.key, bytes(r.value) if r.value is not None else None,
             h.with_context(r.headers, {
                 h.ORIGINAL_TOPIC: r.topic, h.ORIGINAL_PARTITION: r.partition,
                 h.ORIGINAL_OFFSET: r.offset, h.ORIGINAL_TIMESTAMP: r.timestamp_ms,
                 h.CONSUMER_GROUP: group, h.REASON: rejected.reason,
                 h.ERROR_TYPE: "message_reassembly_failed"}))
            for r in rejected.records]


@dataclass
class _Handed:
    """What becomes true once the message handed out has been handled."""

    handled: list[tuple[str, int, int]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


class ReassemblingConsumer:
    """A confluent-kafka consumer that gives back whole messages.

    Offsets: a record counts as handled once the message it completed has been handed out
    and the caller came back (next poll, commit, or the handler returned in run()). The
    committed offset never passes the first fragment of a set still open; the commit's
    metadata records how far everything else was handled, so after a crash or rebalance
    what was delivered already is skipped (app/oversize/offsets.py)."""

    def __init__(self, group: str, topics: list[str], settings: Settings | None = None, *,
                 consumer_config: dict[str, Any] | None = None,
                 store: ClaimCheckStore | None = None, producer: Producer | None = None,
                 reassembler: Reassembler | None = None, expiry_check_s: float = 1.0,
                 on_sets_in_progress: Callable[[int], None] | None = None):
        self.settings = settings or get_settings()
        self.group = group
        # Told the number of fragment sets open after each change (a gauge, for example).
        self.on_sets_in_progress = on_sets_in_progress or _ignore
        self.store = store if store is not None else store_from_settings(self.settings)
        self.reassembler = reassembler or Reassembler(limits_from_settings(self.settings),
                                                      self.store)
        self.tracker = OffsetTracker()
        self.producer = producer or Producer(kafka_config.producer_config(
            self.settings, **{"message.max.bytes": MOVED_MAX_BYTES}))
        self.dlq = self.settings.topic("recovery.dlq")
        self.poison = self.settings.topic("recovery.poison")
        self.pending: deque[tuple[LargeMessage, _Handed]] = deque()
        self._handed: _Handed | None = None
        self._committed: dict[tuple[str, int], tuple[int, str]] = {}
        self._last_expiry = time.monotonic()
        self.expiry_check_s = expiry_check_s
        self.rejected_count = 0
        self._stopped = False
        # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by default) whenever its
        # prefetch queue is full, which a consumer copying 1 MB fragments fills at once.
        self.consumer = Consumer(kafka_config.consumer_config(
            self.settings, group, **{"fetch.queue.backoff.ms": 10, **(consumer_config or {})}))
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    # ---- rebalances ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        for tp in committed:
            self.tracker.assigned(tp.topic, tp.partition, tp.metadata)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.pending = deque((m, w) for m, w in self.pending
                             if (m.topic(), m.partition()) not in revoked)
        try:
            self.commit(only=revoked)
        except KafkaException as exc:
            log.warning("commit on revoke failed: %s", exc)
        for topic, partition in revoked:
            self.reassembler.forget_partition(topic, partition)
            self.tracker.revoked(topic, partition)
            self._committed.pop((topic, partition), None)

    # ---- reading ---------------------------------------------------------------------------

    def poll(self, timeout: float = 1.0) -> LargeMessage | None:
        """The next whole message, or None when none is complete within `timeout`."""
        self._settle()
        deadline = time.monotonic() + timeout
        while True:
            if self.pending:
                message, handed = self.pending.popleft()
                self._handed = handed
                return message
            self._sweep()
            remaining = deadline - time.monotonic()
            if remaining < 0:
                return None
            raw = self.consumer.poll(min(remaining, self.expiry_check_s))
            if raw is None:
                continue
            if raw.error():
                log.warning("consumer error: %s", raw.error())
                continue
            self._take(incoming_of(raw))

    def _take(self, record: Incoming) -> None:
        set_id = h.header_value(record.headers, oh.FRAGMENT_ID) \
            if oh.strategy_of(record.headers) == oh.FRAGMENTATION else None
        if self.tracker.skips(record.topic, record.partition, record.offset, set_id):
            self.tracker.handled(record.topic, record.partition, record.offset)
            return
        outcome = self.reassembler.process(record)
        self._reject(outcome)
        if outcome.held:
            self.tracker.hold(record.topic, record.partition, outcome.held, record.offset)
        if not outcome.delivered:
            for set_id_closed in outcome.closed:
                self.tracker.release(set_id_closed)
            self.tracker.handled(record.topic, record.partition, record.offset)
        else:
            # Handled, and its set released, only once the caller is done with the message.
            for i, whole in enumerate(outcome.delivered):
                last = i == len(outcome.delivered) - 1
                handed = _Handed([record.position] if last else [],
                                 list(outcome.closed) if last else [])
                self.pending.append((LargeMessage(whole), handed))
        self.on_sets_in_progress(self.reassembler.sets_in_progress)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_expiry < self.expiry_check_s:
            return
        self._last_expiry = now
        outcome = self.reassembler.expire(now)
        self._reject(outcome)
        for set_id in outcome.closed:
            self.tracker.release(set_id)
        if outcome.closed:
            self.on_sets_in_progress(self.reassembler.sets_in_progress)

    def _reject(self, outcome: Outcome) -> None:
        for rejected in outcome.rejected:
            log.warning("%d record(s) to %s: %s", len(rejected.records), rejected.destination,
                        rejected.reason)
            for topic, key, value, headers in rejected_records(rejected, self.group, self.dlq,
                                                               self.poison):
                while True:
                    try:
                        self.producer.produce(topic, key=key, value=value, headers=headers)
                        break
                    except BufferError:
                        self.producer.poll(0.1)
                self.rejected_count += 1
            self.producer.poll(0)

    def _settle(self) -> None:
        handed, self._handed = self._handed, None
        if handed is None:
            return
        for set_id in handed.released:
            self.tracker.release(set_id)
        for topic, partition, offset in handed.handled:
            self.tracker.handled(topic, partition, offset)

    # ---- committing ------------------------------------------------------------------------

    def commit(self, only: set[tuple[str, int]] | None = None) -> None:
        """Commits what has been handled (the message last handed out included). Records
        sent to the dead-letter or poison topic are flushed first."""
        self._settle()
        if self.producer.flush(30):
            raise KafkaException("dead-letter/poison records not delivered within 30 s")
        offsets = []
        for (topic, partition) in list(self.tracker.partitions):
            if only is not None and (topic, partition) not in only:
                continue
            position = self.tracker.position(topic, partition)
            if position is None or self._committed.get((topic, partition)) == position:
                continue
            offsets.append(KafkaTopicPartition(topic, partition, position[0],
                                               metadata=position[1]))
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            for tp in offsets:
                self._committed[(tp.topic, tp.partition)] = (tp.offset, tp.metadata)

    def run(self, handler: Callable[[LargeMessage], None], *,
            until: Callable[[], bool] | None = None, poll_timeout: float = 0.5) -> None:
        """Calls `handler` once per whole message and commits after each."""
        try:
            while not self._stopped and not (until and until()):
                message = self.poll(poll_timeout)
                if message is None:
                    self.commit()
                    continue
                handler(message)
                self.commit()
        finally:
            self.close()

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        try:
            self.producer.flush(30)
        finally:
            self.consumer.close()
            self.reassembler.close()


class FaustReassembler:
    """Whole messages for a Faust agent. Fragment events are acknowledged only when their
    set is delivered (and handled) or rejected, so Faust never commits past the first
    fragment of a set still open.

        reassembler = FaustReassembler(app)

        @app.agent(orders_topic)   # a topic with raw (bytes) keys and values
        async def orders(stream):
            async for message in reassembler.messages(stream):
                ...  # message.value(), message.key(), message.headers()

    After a crash Faust's at-least-once applies: records between the first fragment of a
    set that was open and the crash are delivered again (the confluent-kafka consumer above
    avoids that with commit metadata, which Faust does not expose)."""

    def __init__(self, app: Any, settings: Settings | None = None, *,
                 store: ClaimCheckStore | None = None, reassembler: Reassembler | None = None,
                 group: str | None = None, expiry_check_s: float = 1.0,
                 on_sets_in_progress: Callable[[int], None] | None = None):
        self.app = app
        self.on_sets_in_progress = on_sets_in_progress or _ignore
        self.settings = settings or get_settings()
        self.store = store if store is not None else store_from_settings(self.settings)
        self.reassembler = reassembler or Reassembler(limits_from_settings(self.settings),
                                                      self.store)
        self.group = group or getattr(getattr(app, "conf", None), "id", None)
        self.dlq = self.settings.topic("recovery.dlq")
        self.poison = self.settings.topic("recovery.poison")
        self.lock = asyncio.Lock()
        self.held: dict[str, list[Any]] = {}  # open set id -> its fragments' Faust messages
        self.rejected_count = 0
        app.timer(expiry_check_s)(self._sweep)

    async def messages(self, stream: Any) -> Any:
        """An async iterator of LargeMessage over an agent's stream."""
        loop = asyncio.get_running_loop()
        async for event in stream.noack().events():
            message = event.message
            record = Incoming(message.topic, message.partition, message.offset,
                              int(message.timestamp * 1000) if message.timestamp else None,
                              message.key, message.value, list(message.headers or []))
            async with self.lock:
                if oh.strategy_of(record.headers) == oh.EXTERNAL_STORAGE:
                    outcome = await loop.run_in_executor(None, self.reassembler.process, record)
                else:
                    outcome = self.reassembler.process(record)
                await self._reject(outcome)
                if outcome.held:
                    self.held.setdefault(outcome.held, []).append(message)
                    # The bytes are in the assembler's buffer now; Faust keeps the message
                    # until it is acknowledged, so drop its copy.
                    message.value = None
                    event.value = None
                done = self._release(outcome.closed)
                self.on_sets_in_progress(self.reassembler.sets_in_progress)
            for whole in outcome.delivered:
                yield LargeMessage(whole)
            # Back here once the agent has handled what was yielded.
            for held in done:
                held.ack(self.app.consumer)
            if not outcome.held:
                message.ack(self.app.consumer)

    def _release(self, closed: list[str]) -> list[Any]:
        released: list[Any] = []
        for set_id in closed:
            released += self.held.pop(set_id, [])
        return released

    async def _sweep(self) -> None:
        async with self.lock:
            outcome = self.reassembler.expire()
            await self._reject(outcome)
            for held in self._release(outcome.closed):
                held.ack(self.app.consumer)
            if outcome.closed:
                self.on_sets_in_progress(self.reassembler.sets_in_progress)

    async def _reject(self, outcome: Outcome) -> None:
        for rejected in outcome.rejected:
            log.warning("%d record(s) to %s: %s", len(rejected.records), rejected.destination,
                        rejected.reason)
            for topic, key, value, headers in rejected_records(rejected, self.group, self.dlq,
                                                               self.poison):
                await self.app.producer.send(topic, key, value, None, None, headers)
                self.rejected_count += 1


def report_message_too_large(reporter: FailureReporter, *, topic: str, key: bytes | None,
                             value: bytes, headers: h.HeadersArg = None, size_limit: int,
                             service: str, message: str = "", event_type: str | None = None,
                             store: ClaimCheckStore | None = None,
                             attach_limit: int = 900_000, **fields: Any) -> dict[str, Any]:
    """Reports a record its topic refused as too large (EVENT_DELIVERY_FAILED, cause
    MESSAGE_TOO_LARGE) with the record attached, so the worker can re-publish it through
    the strategies. A payload too large for the failure event itself is attached compressed
    or as a claim-check reference (the worker reads either)."""
    original = h.normalize(headers)
    attached_key, attached_value, attached_headers = key, value, original
    if len(value) > attach_limit:
        store = store if store is not None else store_from_settings(reporter.settings)
        encoded = encode(topic, key, value, original, limit=attach_limit,
                         policy=op.TopicPolicy(disabled=frozenset({oh.FRAGMENTATION})),
                         store=store)
        only = encoded.records[0]
        attached_key, attached_value, attached_headers = only.key, bytes(only.value or b""), \
            only.headers
    return reporter.report(
        kind="EVENT_DELIVERY_FAILED", error_type="message_too_large", service=service,
        message=message or f"record of {len(value)} bytes exceeds {size_limit} bytes on {topic}",
        failed_record={"topic": topic, "partition": -1, "offset": -1, "timestamp": None,
                       "key": attached_key, "value": attached_value,
                       "headers": [{"key": k, "value": v} for k, v in attached_headers]},
        detail=("EventDeliveryFailed", {"cause": "MESSAGE_TOO_LARGE", "event_type": event_type,
                                        "target_topic": topic, "failed_consumers": [],
                                        "message_size": len(value), "size_limit": size_limit}),
        **fields)
