"""The worker's one librdkafka producer for its outputs: lifecycle events, retry, dead-letter,
poison, redelivery and command records (the outbox's transport).

Idempotent, acks=all. `produce` only enqueues; a poller thread of its own serves librdkafka's
delivery reports. Outputs are counted in a `DeliveryGroup`, one per batch of input records
the worker handles: the agent acknowledges its inputs (so Faust may commit their offsets)
only after `deliver` has seen every output of the group acknowledged by the broker. A record
the broker refuses (too large for the topic, a topic deleted, the delivery timeout passed)
is logged, counted through `on_failure`, and sent again with a growing pause until it is
accepted; the batch's inputs stay unacknowledged all that time.

An idempotent producer can fail fatally (librdkafka's `_FATAL`: a sequence gap it cannot
repair, after brokers were frozen or killed); from then on it refuses every record, so a
resend would wait forever. Then a new producer takes over: the old one's queued records are
purged (their groups see them failed) and sent again through the new one, with the same
content (repeats, never losses).

A send made outside a batch (a timer, a page) waits for its own delivery and raises if the
broker refused it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.contracts.records import OutRecord

log = logging.getLogger(__name__)

# Measured with scripts/bench_pipeline.py (docs/benchmarks/pipeline.md): a short linger lets
# a batch's outputs share produce requests without delaying a due retry noticeably.
OUTPUT_TUNING: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 200_000,
    # No compression: readers of these topics include aiokafka clients (Faust, the scenario
    # services), which need an extra library for lz4 or zstd.
}
FailureReport = Callable[[OutRecord, str], None]


class DeliveryFailed(Exception):
    """An output the broker did not accept."""


class DeliveryGroup:
    """The outputs of one batch: how many are still on their way, and which failed. The
    delivery callbacks run on the poller thread; the waiting coroutine is woken once, when
    the last one arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending = 0
        self.sent = 0
        self.failed: list[tuple[OutRecord, str]] = []
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None

    def add(self) -> None:
        with self._lock:
            self.pending += 1
            self.sent += 1

    def done(self, record: OutRecord, error: str | None) -> None:
        with self._lock:
            self.pending -= 1
            if error is not None:
                self.failed.append((record, error))
            waiter = self._waiter if self.pending == 0 else None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_resolve, waiter)

    async def settled(self) -> list[tuple[OutRecord, str]]:
        """Waits until no output of the group is on its way; returns the failed ones (and
        forgets them, so the group can be used again for their resends)."""
        with self._lock:
            if self.pending:
                self._waiter = self.loop.create_future()
            waiter = self._waiter
        if waiter is not None:
            await waiter
        with self._lock:
            self._waiter = None
            failed, self.failed = self.failed, []
        return failed


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_GROUP: ContextVar[DeliveryGroup | None] = ContextVar("delivery_group", default=None)


class OutputProducer:
    def __init__(self, config: dict[str, Any], *, on_failure: FailureReport | None = None,
                 retry_pause_s: tuple[float, float] = (0.5, 10.0),
                 make_producer: Callable[[dict[str, Any]], Producer] = Producer):
        self.make_producer = make_producer
        self.config = {**config, "enable.idempotence": True, "acks": "all"}
        self.on_failure = on_failure or (lambda record, error: None)
        self.retry_pause_s = retry_pause_s
        self.undelivered = 0  # outputs of batches waiting for a resend (a metrics gauge)
        self._producer: Producer | None = None
        self._stop = threading.Event()  # the current producer's poller
        self._poller: threading.Thread | None = None
        self.fatal: str | None = None  # the fatal error the current producer hit, if any
        self.renewals = 0
        # Headers an output to a topic gains (the worker's identity on its lifecycle events:
        # contracts.headers.EMITTED_BY); records moved for a user keep their headers as sent.
        self.stamp: Callable[[str], list[tuple[str, bytes | None]]] = lambda topic: []

    @property
    def producer(self) -> Producer:
        """Made at the first send (a worker built and never run connects to nothing)."""
        if self._producer is None:
            self.fatal = None
            self._stop = threading.Event()
            self._producer = self.make_producer({**self.config, "error_cb": self._on_error})
            self._poller = threading.Thread(target=self._poll,
                                            args=(self._producer, self._stop),
                                            name="output-deliveries", daemon=True)
            self._poller.start()
        return self._producer

    @staticmethod
    def _poll(producer: Producer, stop: threading.Event) -> None:
        while not stop.is_set():
            producer.poll(0.05)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._note_fatal(error.str())

    def _note_fatal(self, error: str) -> None:
        if self.fatal is None:
            log.error("the output producer failed fatally: %s", error)
            self.fatal = error

    def renew(self) -> None:
        """Replaces a producer that failed fatally: what it still holds is purged (reported
        failed to its groups, which send it again through the new one)."""
        old, stop = self._producer, self._stop
        if old is None:
            return
        self._producer = None
        self.renewals += 1
        log.error("a new output producer takes over from one that failed fatally (%s); the "
                  "outputs it held are sent again", self.fatal)
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.flush(1.0)  # serves the purged records' delivery reports
        except Exception as exc:  # a fatal producer may refuse even that
            log.warning("purging the failed output producer: %r", exc)
        stop.set()

    @contextmanager
    def batch(self) -> Iterator[DeliveryGroup]:
        """The delivery group of the batch the current task handles: sends made inside go
        into it (see `deliver`)."""
        group = DeliveryGroup(asyncio.get_running_loop())
        token = _GROUP.set(group)
        try:
            yield group
        finally:
            _GROUP.reset(token)

    def _produce(self, record: OutRecord, group: DeliveryGroup) -> None:
        group.add()
        stamp = self.stamp(record.topic)
        stamped = {name for name, _ in stamp}  # an earlier hop's stamp is replaced
        headers = [(k, v) for k, v in record.headers or () if k not in stamped] + stamp

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None and error.fatal():
                self._note_fatal(error.str())
            group.done(record, None if error is None else error.str())

        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key,
                                      headers=headers or None,
                                      on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (too large, or fatal)
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.fatal():
                    self._note_fatal(error.str())
                group.done(record, error.str() if isinstance(error, KafkaError) else str(exc))
                return
            except Exception as exc:  # a bad argument: reported like a refusal
                group.done(record, f"{type(exc).__name__}: {exc}")
                return

    async def send(self, record: OutRecord) -> None:
        group = _GROUP.get()
        if group is not None:
            self._produce(record, group)
            return
        alone = DeliveryGroup(asyncio.get_running_loop())
        self._produce(record, alone)
        failed = await alone.settled()
        if failed:
            for output, error in failed:
                self.on_failure(output, error)
            if self.fatal is not None:
                self.renew()  # the caller's next send goes through a working producer
            raise DeliveryFailed(f"{record.topic}: {failed[0][1]}")

    async def deliver(self, group: DeliveryGroup) -> None:
        """Returns once every output of the group is acknowledged by the broker: a refused
        one is reported and sent again, pausing longer each time (up to the second figure
        of retry_pause_s), for as long as it takes."""
        pause = self.retry_pause_s[0]
        held = 0  # this group's share of `undelivered`
        try:
            while True:
                failed = await group.settled()
                self.undelivered += len(failed) - held
                held = len(failed)
                if not failed:
                    return
                for record, error in failed:
                    self.on_failure(record, error)
                log.error("%d output(s) not accepted by the broker (first: %s: %s); their "
                          "input stays uncommitted; sending again in %.1f s", len(failed),
                          failed[0][0].topic, failed[0][1], pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.retry_pause_s[1])
                if self.fatal is not None:
                    self.renew()
                for record, _ in failed:
                    self._produce(record, group)
        finally:
            self.undelivered -= held

    def close(self, timeout_s: float = 10.0) -> int:
        """Flushes what is queued (bounded) and stops the poller; returns what is left."""
        if self._producer is None:
            return 0
        left = self._producer.flush(timeout_s)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=1.0)
        return int(left)
