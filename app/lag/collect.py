"""One snapshot of every consumer group's committed offsets and the end offsets of their
partitions, through confluent-kafka's AdminClient.

Kafka answers offset fetches one group per request, so the collector sends the requests for
all groups at once and waits for them together; the end offsets of every partition any group
has committed to go in one ListOffsets call (librdkafka splits it per partition leader).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from app.kafka.config import admin_config
from app.settings import Settings

INACTIVE_STATES = frozenset({ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD})


class LagError(Exception):
    """The cluster could not be asked; the message is one plain line for people."""


@dataclass(frozen=True)
class GroupOffsets:
    group: str
    state: str
    active: bool
    # (topic, partition) -> committed offset (the next record the group will read)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    taken_at_ms: int
    groups: dict[str, GroupOffsets]
    # (topic, partition) -> end offset (high watermark)
    end_offsets: dict[tuple[str, int], int]
    # topic -> records it holds now (end minus start offsets), for the topics asked for
    topic_sizes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def matches(group: str, patterns: Sequence[str]) -> bool:
    """A group is watched when no pattern is given or one of the glob patterns matches."""
    return not patterns or any(fnmatch.fnmatchcase(group, p) for p in patterns)


def parse_patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


class LagCollector:
    """Takes snapshots; one AdminClient for its whole life (it is thread-safe)."""

    def __init__(self, settings: Settings, *, timeout: float = 15.0, quiet: bool = False,
                 admin: AdminClient | None = None):
        self.settings = settings
        self.timeout = timeout
        # quiet: no librdkafka log lines on stderr (the CLI reports errors itself)
        extra = {"log_level": 0} if quiet else {}
        self.admin = admin or AdminClient(admin_config(settings, **extra))

    def snapshot(self, patterns: Sequence[str] = (), *,
                 sized_topics: Iterable[str] = ()) -> Snapshot:
        taken = int(time.time() * 1000)
        errors: list[str] = []
        where = self.settings.kafka_bootstrap_servers
        try:
            # One metadata request first: an unreachable cluster is one clear error here,
            # where the group listing would return an empty list.
            metadata = self.admin.list_topics(timeout=self.timeout)
            listed = self.admin.list_consumer_groups(
                request_timeout=self.timeout).result(self.timeout + 5)
        except Exception as exc:
            raise LagError(f"cannot reach Kafka at {where}: {exc}") from exc
        if listed.errors and not listed.valid:
            raise LagError(f"cannot list consumer groups at {where}: {listed.errors[0]}")
        errors += [f"listing groups: {error}" for error in listed.errors]
        listings = sorted((g for g in listed.valid if matches(g.group_id, patterns)),
                          key=lambda g: g.group_id)
        groups = self._committed(listings, errors)
        partitions = {tp for g in groups.values() for tp in g.committed}
        end_offsets = self._offsets(partitions, OffsetSpec.latest(), errors)
        sizes = self._topic_sizes(metadata, list(sized_topics), errors)
        return Snapshot(taken, groups, end_offsets, sizes, errors)

    def _committed(self, listings: list, errors: list[str]) -> dict[str, GroupOffsets]:
        futures: dict[str, Future] = {}
        for listing in listings:
            futures.update(self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(listing.group_id)],
                request_timeout=self.timeout))
        wait(list(futures.values()), timeout=self.timeout + 5)
        groups: dict[str, GroupOffsets] = {}
        for listing in listings:
            try:
                result = futures[listing.group_id].result(0)
            except Exception as exc:  # a group deleted meanwhile, a coordinator moving
                errors.append(f"group {listing.group_id}: {exc}")
                continue
            committed = {(tp.topic, tp.partition): tp.offset
                         for tp in result.topic_partitions or [] if tp.offset >= 0}
            state = listing.state
            groups[listing.group_id] = GroupOffsets(
                listing.group_id, getattr(state, "name", str(state)),
                state not in INACTIVE_STATES, committed)
        return groups

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec,
                 errors: list[str]) -> dict[tuple[str, int], int]:
        request = {TopicPartition(topic, partition): spec for topic, partition in partitions}
        if not request:
            return {}
        futures = self.admin.list_offsets(request, request_timeout=self.timeout)
        wait(list(futures.values()), timeout=self.timeout + 5)
        offsets: dict[tuple[str, int], int] = {}
        failed_topics: set[str] = set()
        for tp, future in futures.items():
            try:
                offsets[(tp.topic, tp.partition)] = future.result(0).offset
            except Exception as exc:  # a deleted topic: its rows are left out
                if tp.topic not in failed_topics:
                    failed_topics.add(tp.topic)
                    errors.append(f"topic {tp.topic}: {exc}")
        return offsets

    def _topic_sizes(self, metadata: Any, topics: list[str],
                     errors: list[str]) -> dict[str, int]:
        partitions = [(t, p) for t in topics if t in metadata.topics
                      for p in metadata.topics[t].partitions]
        ends = self._offsets(partitions, OffsetSpec.latest(), errors)
        starts = self._offsets(partitions, OffsetSpec.earliest(), errors)
        sizes = dict.fromkeys((t for t in topics if t in metadata.topics), 0)
        for tp, end in ends.items():
            sizes[tp[0]] += max(end - starts.get(tp, end), 0)
        return sizes
