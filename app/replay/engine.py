"""The replay loop: read the dead-letter topic in batches over the partitions a replay still
has to read, keep what the selection takes, send it to its target with a replay id, and
store progress every few seconds, once everything sent so far has been acknowledged.

At least once, delivered once: after a crash the records sent since the last stored progress
are sent again with the same replay ids, and the client API drops the second copy. The
dead-letter topic is only read, never written to."""

from __future__ import annotations

import gc
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from app.contracts import headers as h
from app.kafka.config import consumer_config, producer_config
from app.replay import rate as rate_limit
from app.replay.progress import DONE, FAILED, INTERRUPTED, RUNNING, Progress
from app.replay.selection import Predicate
from app.replay.store import topic_partitions
from app.replay.summary import Row, row_of
from app.replay.targets import INCIDENT, TOPIC, Target, replay_command, resolver
from app.settings import Settings

CHECKPOINT_S = 2.0
FLUSH_TIMEOUT_S = 60.0
_EOF = KafkaError._PARTITION_EOF


def make_consumer(settings: Settings) -> Consumer:
    """Assigned partitions only: no group membership, nothing committed."""
    return Consumer(consumer_config(settings, f"recovery-replay-{uuid.uuid4()}", **{
        "enable.partition.eof": True,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        # librdkafka >= 2.4 waits a whole second before refilling a partition's fetch queue
        # once it is over its threshold: that stalled a fast reader for most of that second
        "fetch.queue.backoff.ms": 10,
    }))


def make_producer(settings: Settings, errors: list[str]) -> Producer:
    """Large batches, long linger; a delivery report only for a record that failed."""

    def failed(err: KafkaError | None, message: Any) -> None:
        if err is not None:
            errors.append(f"{message.topic()}: {err.str()}")

    return Producer(producer_config(settings, **{
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 1_000_000,
        "delivery.report.only.error": True,
        "on_delivery": failed,
    }))


@dataclass
class Counts:
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    unroutable: int = 0
    not_sent: int = 0


@dataclass
class ReplayOutcome:
    progress: Progress
    run: Counts
    elapsed_s: float
    interrupted: bool = False
    summary: Counter[Row] = field(default_factory=Counter)  # dry run: what would be sent
    missing: Counter[str] = field(default_factory=Counter)  # target topic -> records not sent
    delivery_error: str | None = None


class DeliveryFailed(Exception):
    pass


class ProgressSink(Protocol):
    """Where checkpoints go: the progress topic, or a parent process that merges them."""

    def save(self, progress: Progress) -> None: ...


@dataclass(kw_only=True, eq=False)
class Replay:
    consumer: Consumer
    producer: Producer | None
    store: ProgressSink | None
    progress: Progress
    target: Target
    predicate: Predicate | None
    delivery_errors: list[str] | None = None
    dry_run: bool = False
    rate: float | None = None
    checkpoint_s: float = CHECKPOINT_S
    stop: Callable[[], bool] = lambda: False
    on_progress: Callable[[Progress], None] | None = None
    clock: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)

    def __post_init__(self) -> None:
        if not self.dry_run and (self.producer is None or self.store is None):
            raise ValueError("a replay that sends needs a producer and a progress store")
        self.base = self.progress
        self.errors = self.delivery_errors if self.delivery_errors is not None else []
        self.run_counts = Counts()
        self.summary: Counter[Row] = Counter()
        self.missing: Counter[str] = Counter()
        self.known_topics: dict[str, bool] = {}
        self.next: dict[int, int] = dict(self.progress.next)
        self.open: set[int] = set()
        # every record to one topic, no filter: the shortest loop
        self.fast = (not self.dry_run and self.predicate is None
                     and self.target.kind == TOPIC)

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> ReplayOutcome:
        # The loop makes a few objects per record and no reference cycles: the cyclic
        # collector, set off by the allocations alone, cost about a tenth of the loop's time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> ReplayOutcome:
        started = self.clock()
        topic = self.base.dlq_topic
        todo = self.base.to_read()
        self.open = set(todo)
        if todo:
            self.consumer.assign([TopicPartition(topic, p, off) for p, off in todo.items()])
        batch = rate_limit.batch_size(self.rate)
        last_checkpoint = started
        try:
            while self.open and not self.stop():
                # never more than are left: consume() waits out its timeout for a batch it
                # cannot fill, which would be the last one of every replay
                left = sum(self.base.end[p] - self.next[p] for p in self.open)
                messages = self.consumer.consume(num_messages=max(1, min(batch, left)),
                                                 timeout=0.2)
                if messages:
                    self._batch(messages)
                    if self.producer is not None:
                        self.producer.poll(0)
                    if self.on_progress is not None:
                        self.on_progress(self._current(RUNNING))
                self._keep_rate(started)
                if not self.dry_run and self.clock() - last_checkpoint >= self.checkpoint_s:
                    self._checkpoint(RUNNING)
                    last_checkpoint = self.clock()
            interrupted = bool(self.open)
            self._checkpoint(INTERRUPTED if interrupted else DONE)
        except DeliveryFailed as exc:
            if self.store is not None:
                self.store.save(_marked(self.progress, FAILED, self.wall_ms()))
                self.producer.flush(FLUSH_TIMEOUT_S)  # type: ignore[union-attr]
            return ReplayOutcome(self.progress, self.run_counts, self.clock() - started,
                           interrupted=True, missing=self.missing, delivery_error=str(exc))
        return ReplayOutcome(self.progress, self.run_counts, self.clock() - started,
                       interrupted=interrupted, summary=self.summary, missing=self.missing)

    def _batch(self, messages: list[Any]) -> None:
        if self.fast:
            self._copy(messages)
        else:
            self._select(messages)
        end, nxt = self.base.end, self.next
        for p in [p for p in self.open if nxt[p] >= end[p]]:
            self._close(p)

    def _in_range(self, messages: list[Any]) -> Iterator[tuple[Any, int, int]]:
        """Each record with its partition and offset, less consumer errors (reported) and
        records written after the replay started or past a gap (their partition is done)."""
        end = self.base.end
        for m in messages:
            error = m.error()
            if error is not None:
                self._consumer_error(m, error)
                continue
            p, off = m.partition(), m.offset()
            if off >= end[p]:
                self._close(p)
                continue
            yield m, p, off

    def _copy(self, messages: list[Any]) -> None:
        """Every record to one topic: the per-record work is the least there is (the
        headers list each message hands out is fresh, so the replay id is appended to it)."""
        nxt = self.next
        topic = self.target.topic
        produce = self.producer.produce  # type: ignore[union-attr]
        replay_header = h.REPLAY_ID
        sent = 0
        for m, p, off in self._in_range(messages):
            hs = m.headers()
            if hs is None:
                hs = [(replay_header, b"%d:%d" % (p, off))]
            else:
                hs.append((replay_header, b"%d:%d" % (p, off)))
            try:
                produce(topic, m.value(), m.key(), headers=hs)
            except BufferError:
                self._produce_when_room(topic, m.value(), m.key(), hs)
            nxt[p] = off + 1
            sent += 1
        c = self.run_counts
        c.scanned += sent
        c.matched += sent
        c.sent += sent

    def _select(self, messages: list[Any]) -> None:
        """Filters, a target per record, or a dry run: the headers become a dict (each
        header's last value) when a filter or the target needs one."""
        nxt = self.next
        predicate = self.predicate
        resolve = resolver(self.target)
        need_dict = predicate is not None or self.target.kind != TOPIC or self.dry_run
        dry_run = self.dry_run
        produce = self.producer.produce if self.producer is not None else None
        known = self.known_topics
        replay_header = h.REPLAY_ID
        as_command = self.target.kind == INCIDENT
        scanned = matched = sent = unroutable = not_sent = 0
        hs_dict: dict[str, bytes | None] = {}
        for m, p, off in self._in_range(messages):
            nxt[p] = off + 1
            scanned += 1
            hs = m.headers() or []
            if need_dict:
                hs_dict = dict(hs)
            if predicate is not None and not predicate(m.key(), hs_dict, m.timestamp()[1]):
                continue
            matched += 1
            topic = resolve(hs_dict)
            if dry_run:
                self.summary[row_of(hs_dict, topic)] += 1
                if topic is None:
                    unroutable += 1
                continue
            if topic is None:
                unroutable += 1
                continue
            exists = known.get(topic)
            if exists is None:
                exists = known[topic] = self._topic_exists(topic)
            if not exists:
                self.missing[topic] += 1
                not_sent += 1
                continue
            key = m.key()
            if as_command:
                key, hs = replay_command(hs, key, p, off)
            else:
                hs.append((replay_header, b"%d:%d" % (p, off)))
            try:
                produce(topic, m.value(), key, headers=hs)  # type: ignore[misc]
            except BufferError:
                self._produce_when_room(topic, m.value(), key, hs)
            sent += 1
        c = self.run_counts
        c.scanned += scanned
        c.matched += matched
        c.sent += sent
        c.unroutable += unroutable
        c.not_sent += not_sent

    def _produce_when_room(self, topic: str, value: Any, key: Any, headers: list) -> None:
        producer = self.producer
        assert producer is not None
        while True:
            producer.poll(0.05)
            try:
                producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                continue

    def _consumer_error(self, message: Any, error: KafkaError) -> None:
        if error.code() == _EOF:
            self._close(message.partition())
        elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(error)
        # anything else is transient; librdkafka retries on its own

    def _close(self, partition: int) -> None:
        if partition in self.open:
            self.open.discard(partition)
            self.consumer.incremental_unassign([TopicPartition(self.base.dlq_topic, partition)])

    def _topic_exists(self, topic: str) -> bool:
        return topic_partitions(self.consumer, topic) is not None

    def _keep_rate(self, started: float) -> None:
        while not self.stop():
            wait = rate_limit.wait_s(self.run_counts.sent, self.clock() - started, self.rate)
            if wait <= 0:
                return
            if self.producer is not None:
                self.producer.poll(min(wait, 0.1))
            else:
                time.sleep(min(wait, 0.1))

    # ---- progress ---------------------------------------------------------------------

    def _current(self, state: str) -> Progress:
        c = self.run_counts
        return self.base.advanced(self.next, scanned=c.scanned, matched=c.matched, sent=c.sent,
                                  unroutable=c.unroutable, not_sent=c.not_sent, state=state,
                                  now_ms=self.wall_ms())

    def _checkpoint(self, state: str) -> None:
        """Stores how far the replay has got, but only once everything sent up to here has
        been acknowledged: stored progress never runs ahead of what was delivered."""
        current = self._current(state)
        if self.dry_run:
            self.progress = current
            return
        producer = self.producer
        assert producer is not None and self.store is not None
        if producer.flush(FLUSH_TIMEOUT_S) or self.errors:
            raise DeliveryFailed(self.errors[0] if self.errors else
                                 f"records not acknowledged within {FLUSH_TIMEOUT_S:.0f} s")
        self.store.save(current)
        self.progress = current
        if state != RUNNING:
            producer.flush(FLUSH_TIMEOUT_S)
            if self.errors:
                raise DeliveryFailed(self.errors[0])


def _marked(progress: Progress, state: str, now_ms: int) -> Progress:
    return progress.advanced({}, scanned=0, matched=0, sent=0, unroutable=0, not_sent=0,
                             state=state, now_ms=now_ms)
