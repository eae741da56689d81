"""The replay loop against fake clients: what it sends, where it stops, and that stored
progress never runs ahead of what the broker acknowledged. (Through a real broker:
tests/integration/test_replay.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from app.contracts import headers as h
from app.replay.engine import Replay
from app.replay.progress import DONE, FAILED, INTERRUPTED, Progress, start
from app.replay.targets import ORIGINAL, TOPIC, Target

DLQ = "dlq"


class FakeMessage:
    def __init__(self, partition: int, offset: int, key: bytes | None = None,
                 value: bytes | None = b"v", headers: list | None = None, ts: int = 0,
                 error: KafkaError | None = None):
        self._p, self._o, self._k, self._v = partition, offset, key, value
        self._h, self._ts, self._e = headers, ts, error

    def error(self) -> KafkaError | None:
        return self._e

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list | None:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


class FakeConsumer:
    """Hands out the given batches, then nothing; remembers assignment changes."""

    def __init__(self, batches: list[list[FakeMessage]]):
        self.batches = list(batches)
        self.assigned: list[tuple[int, int]] = []
        self.unassigned: list[int] = []

    def assign(self, tps: list) -> None:
        self.assigned = [(tp.partition, tp.offset) for tp in tps]

    def incremental_unassign(self, tps: list) -> None:
        self.unassigned += [tp.partition for tp in tps]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def list_topics(self, topic: str, timeout: float) -> Any:
        class Meta:
            topics = {t: type("T", (), {"error": None, "partitions": {0: None}})()
                      for t in ("orders", "payments", "copy")}
        return Meta()


class FakeProducer:
    def __init__(self, errors: list[str], fail_on_flush: int | None = None):
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []
        self.acked = 0  # records acknowledged by the last flush
        self.errors = errors
        self.fail_on_flush = fail_on_flush
        self.flushes = 0

    def produce(self, topic: str, value: Any = None, key: Any = None, headers: Any = None):
        self.sent.append((topic, key, value, headers))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        if self.fail_on_flush == self.flushes:
            self.errors.append("orders: Broker: Message size too large")
        self.acked = len(self.sent)
        return 0


class FakeStore:
    def __init__(self, producer: FakeProducer):
        self.saved: list[Progress] = []
        self.producer = producer

    def save(self, progress: Progress) -> None:
        self.saved.append(progress)


def dead(partition: int, offset: int, topic: str = "orders", **kw: Any) -> FakeMessage:
    return FakeMessage(partition, offset, key=f"k{partition}-{offset}".encode(),
                       headers=[("trace", b"t"), (h.ORIGINAL_TOPIC, topic.encode())], **kw)


def replay(batches: list[list[FakeMessage]], *, end: dict[int, int], target: Target,
           dry_run: bool = False, stop: Callable[[], bool] = lambda: False,
           fail_on_flush: int | None = None, checkpoint_s: float = 1000.0,
           predicate: Any = None) -> tuple[Any, FakeProducer, FakeStore, FakeConsumer]:
    errors: list[str] = []
    consumer = FakeConsumer(batches)
    producer = FakeProducer(errors, fail_on_flush)
    store = FakeStore(producer)
    progress = start("r", "fp", {}, DLQ, low={p: 0 for p in end}, high=end, now_ms=0)
    ticks = iter(range(10**6))
    engine = Replay(consumer=consumer, producer=None if dry_run else producer,
                    store=None if dry_run else store, progress=progress, target=target,
                    predicate=predicate, delivery_errors=errors, dry_run=dry_run, stop=stop,
                    checkpoint_s=checkpoint_s, clock=lambda: float(next(ticks)))
    return engine.run(), producer, store, consumer


def test_sends_each_dead_letter_with_its_key_value_and_a_replay_id_and_ends() -> None:
    outcome, producer, store, consumer = replay(
        [[dead(0, 0), dead(1, 0, topic="payments")], [dead(0, 1)]],
        end={0: 2, 1: 1}, target=Target(ORIGINAL))
    assert [(t, k) for t, k, _, _ in producer.sent] == [
        ("orders", b"k0-0"), ("payments", b"k1-0"), ("orders", b"k0-1")]
    assert producer.sent[0][3] == [("trace", b"t"), (h.ORIGINAL_TOPIC, b"orders"),
                                   (h.REPLAY_ID, b"0:0")]
    assert consumer.assigned == [(0, 0), (1, 0)]
    assert sorted(consumer.unassigned) == [0, 1]
    assert not outcome.interrupted and outcome.run.sent == 3
    assert store.saved[-1].state == DONE and store.saved[-1].next == {0: 2, 1: 1}


def test_records_past_the_end_fixed_at_the_start_are_not_sent() -> None:
    outcome, producer, _, _ = replay([[dead(0, 0), dead(0, 1), dead(0, 2)]], end={0: 2},
                                     target=Target(TOPIC, "copy"))
    assert [k for _, k, _, _ in producer.sent] == [b"k0-0", b"k0-1"]
    assert outcome.progress.next == {0: 2}


def test_partition_eof_ends_a_partition_whose_end_is_a_gap() -> None:
    eof = FakeMessage(0, 5, error=KafkaError(KafkaError._PARTITION_EOF))
    outcome, producer, _, _ = replay([[dead(0, 3), eof]], end={0: 5},
                                     target=Target(TOPIC, "copy"))
    assert len(producer.sent) == 1 and not outcome.interrupted
    assert outcome.progress.state == DONE


def test_unroutable_and_missing_target_records_are_counted_not_sent() -> None:
    no_topic = FakeMessage(0, 1, headers=[("trace", b"t")])
    outcome, producer, _, _ = replay([[dead(0, 0, topic="gone"), no_topic, dead(0, 2)]],
                                     end={0: 3}, target=Target(ORIGINAL))
    assert [t for t, _, _, _ in producer.sent] == ["orders"]
    assert outcome.run.unroutable == 1 and outcome.run.not_sent == 1
    assert outcome.missing == {"gone": 1}


def test_stop_interrupts_after_the_batch_in_hand_with_its_progress_stored() -> None:
    calls = iter([False, True])
    outcome, producer, store, _ = replay(
        [[dead(0, 0), dead(0, 1)], [dead(0, 2)]], end={0: 3}, target=Target(ORIGINAL),
        stop=lambda: next(calls, True))
    assert len(producer.sent) == 2 and outcome.interrupted
    assert store.saved[-1].state == INTERRUPTED and store.saved[-1].next == {0: 2}
    assert producer.acked == 2  # flushed before the progress was stored


def test_stored_progress_never_includes_records_whose_delivery_failed() -> None:
    # checkpoint after every batch; the second flush reports a failed delivery
    outcome, producer, store, _ = replay(
        [[dead(0, 0)], [dead(0, 1)], [dead(0, 2)]], end={0: 3}, target=Target(ORIGINAL),
        checkpoint_s=0.5, fail_on_flush=2)
    assert outcome.delivery_error == "orders: Broker: Message size too large"
    good = [s for s in store.saved if s.state != FAILED]
    assert [s.next for s in good] == [{0: 1}]
    assert store.saved[-1].state == FAILED and store.saved[-1].next == {0: 1}


def test_dry_run_sends_nothing_and_counts_what_would_go_where() -> None:
    outcome, producer, store, _ = replay(
        [[dead(0, 0), dead(0, 1, topic="payments"), dead(0, 2)]], end={0: 3},
        target=Target(ORIGINAL), dry_run=True)
    assert producer.sent == [] and store.saved == []
    assert outcome.summary == {("orders", "-", "-", "orders"): 2,
                               ("payments", "-", "-", "payments"): 1}


def test_predicate_selects_what_is_sent() -> None:
    def only_payments(key: Any, hs: dict, ts: int) -> bool:
        return hs.get(h.ORIGINAL_TOPIC) == b"payments"

    outcome, producer, _, _ = replay(
        [[dead(0, 0), dead(0, 1, topic="payments")]], end={0: 2},
        target=Target(TOPIC, "copy"), predicate=only_payments)
    assert [k for _, k, _, _ in producer.sent] == [b"k0-1"]
    assert (outcome.run.scanned, outcome.run.matched, outcome.run.sent) == (2, 1, 1)
