"""Running the retention collector: list stored objects, read every record still in the
given topics for references, delete what is old and unreferenced."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from app.kafka import config as kafka_config
from app.oversize.retention import Collection, collectable, referenced_hashes
from app.oversize.store import ClaimCheckStore
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CollectionReport:
    objects: int
    records_scanned: int
    collection: Collection
    deleted: list[str]


def scan_references(settings: Settings, topics: Iterable[str], timeout: float = 60.0,
                    ) -> tuple[set[str], int]:
    """Content hashes referenced by records now in `topics`, read from the log start to the
    end offsets as they are when the scan starts."""
    consumer = Consumer(kafka_config.consumer_config(
        settings, f"recovery-object-collector-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True}))
    found: set[str] = set()
    scanned = 0
    try:
        assignment: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                continue
            for partition in described.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=10)
                if high > low:
                    ends[(topic, partition)] = high
                    assignment.append(TopicPartition(topic, partition, low))
        if not assignment:
            return found, 0
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"scanning for references did not finish in {timeout:.0f} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            where = (message.topic(), message.partition())
            if message.error() is None:
                scanned += 1
                found |= referenced_hashes(message.value())
                if message.offset() + 1 >= ends.get(where, 0):
                    ends.pop(where, None)
            elif message.error().code() == -191:  # _PARTITION_EOF
                ends.pop(where, None)
    finally:
        consumer.close()
    return found, scanned


def collect(settings: Settings, store: ClaimCheckStore, topics: Iterable[str], *,
            dry_run: bool = False, now_ms: Callable[[], int] | None = None) -> CollectionReport:
    clock = now_ms or (lambda: int(time.time() * 1000))
    listed = list(store.store.list(store.location.base))
    referenced, scanned = scan_references(settings, topics)
    plan = collectable(listed, referenced, clock(), settings.object_store_retention_ms)
    deleted = []
    for item in plan.delete:
        current = store.store.stat(item.key)
        # Written again since it was listed: a producer has just referenced it.
        if current is None or current.last_modified_ms != item.last_modified_ms:
            continue
        if not dry_run:
            store.store.delete(item.key)
        deleted.append(item.key)
    log.info("object collector: %d objects, %d records scanned, %d deleted%s", len(listed),
             scanned, len(deleted), " (dry run)" if dry_run else "")
    return CollectionReport(len(listed), scanned, plan, deleted)


def default_topics(settings: Settings) -> list[str]:
    """Topics every collection scans: where the service itself moves records."""
    names = ["recovery.failures", "recovery.dlq", "recovery.poison", "recovery.retry.1s",
             "recovery.retry.2s", "recovery.retry.4s", "recovery.retry.30s"]
    return [settings.topic(n) for n in names]
