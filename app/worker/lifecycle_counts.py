"""How many lifecycle events of each type the worker emitted, kept in a Faust table so that
the metrics counters survive a restart and follow their partitions to another worker.

A count belongs to the input partition whose record the agent was handling when it emitted
the event: the table's key is that topic and partition, and Faust writes its changelog to the
same partition number, so exactly one worker (the partition's owner) writes each key and the
worker that takes the partition over restores it. Emitting adds to a pending tally; after each
input record the agent calls ``flush``, which writes a partition's tally at most every
``flush_interval_s``: a table write per record cost the worker about a tenth of its
throughput. When partitions are taken away (a rebalance) or the worker stops, the pending
tallies go straight to the changelog (``write_pending``, acknowledged before it returns),
where the next owner finds them; the table's store may already be closed then, so the worker
keeps the tally it last wrote for each partition. A SIGKILL loses at most one interval's
counts, and the records after the last offset commit (about the same span) are handled and
counted again after the restart.

Events emitted outside such a record (a timer, or an agent of a topic not co-partitioned
with the table, such as the single-partition scenario topics) are counted in this process
only, and start again from zero after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
from faust.exceptions import PartitionsMismatch

from app.worker import metrics

log = logging.getLogger(__name__)
Source = tuple[str, int]


def source_key(topic: str, partition: int) -> str:
    return f"{topic}|{partition}"


def source_of(key: str) -> Source | None:
    topic, sep, partition = key.rpartition("|")
    if not sep or not partition.isdigit():
        return None
    return topic, int(partition)


def merged(stored: Mapping[str, int] | None, pending: Mapping[str, int]) -> dict[str, int]:
    """A stored tally with pending counts added."""
    out = dict(stored or {})
    for event_type, n in pending.items():
        out[event_type] = out.get(event_type, 0) + n
    return out


def totals(rows: Iterable[tuple[str, Mapping[str, int] | None]], owned: set[Source],
           *extra: Mapping[str, int]) -> Counter[str]:
    """Counts by event type over the stored tallies of the partitions this worker owns (the
    table may also hold standby copies of other workers' partitions), plus ``extra``."""
    out: Counter[str] = Counter()
    for key, tally in rows:
        source = source_of(key)
        if source is not None and source in owned and tally:
            out.update(tally)
    for more in extra:
        out.update(more)
    return out


class TableCounts:
    """Lifecycle-event counts in a Faust table (see the module's docstring)."""

    def __init__(self, table: Any, copartitioned: set[str],
                 owned: Callable[[], set[Source]],
                 send_changelog: Callable[[int, str, dict[str, int]], Awaitable[None]], *,
                 flush_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.table = table
        self.copartitioned = copartitioned
        self.owned = owned
        self.send_changelog = send_changelog
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.pending: dict[Source, Counter[str]] = {}
        self.flushed_at: dict[Source, float] = {}
        self.written: dict[Source, dict[str, int]] = {}  # the tally last written, by source
        self.local: Counter[str] = Counter()

    def _current_source(self) -> Source | None:
        event = faust.current_event()
        if event is None or event.message.topic not in self.copartitioned:
            return None
        return event.message.topic, event.message.partition

    def add(self, event_type: str) -> None:
        source = self._current_source()
        if source is None:
            self.local[event_type] += 1
        else:
            self.pending.setdefault(source, Counter())[event_type] += 1

    def flush(self) -> None:
        """Writes the pending tally of the record's partition if its last write is older
        than the interval; agents call it after each record."""
        source = self._current_source()
        if source is None or source not in self.pending:
            return
        now = self.clock()
        if now - self.flushed_at.get(source, float("-inf")) < self.flush_interval_s:
            return
        self.flushed_at[source] = now
        pending = self.pending.pop(source)
        key = source_key(*source)
        stored = self.written.get(source)
        if stored is None:  # first write since this worker got the partition: restored value
            stored = self.table.get(key)
        try:
            self.table[key] = self.written[source] = merged(stored, pending)
        except PartitionsMismatch:
            # The topic's partitions in the cluster differ from topics/: count here only.
            self.copartitioned.discard(source[0])
            self.local.update(pending)

    async def write_pending(self, sources: Iterable[Source] | None = None) -> None:
        """Sends pending tallies to the changelog without a record in hand (the table's
        store can only be written while handling one): for partitions being taken away, or
        all of them when the worker stops. Their last written tallies are forgotten: the
        partitions may come back with counts another worker added."""
        for source in list(self.pending if sources is None else sources):
            pending = self.pending.pop(source, None)
            written = self.written.pop(source, None)
            self.flushed_at.pop(source, None)
            if not pending:
                continue
            # A source has pending counts only after a record of it was flushed once, so its
            # last written tally is known.
            try:
                await self.send_changelog(source[1], source_key(*source),
                                          merged(written, pending))
            except Exception as exc:  # a rebalance or shutdown must not fail over a count
                log.warning("lifecycle counts of %s[%d] not saved (%s): %s", source[0],
                            source[1], type(exc).__name__, exc)

    def totals(self) -> Counter[str]:
        owned = self.owned()
        pending = [tally for source, tally in self.pending.items() if source in owned]
        return totals(list(self.table.items()), owned, self.local, *pending)


def install(app: faust.App, table: Any, copartitioned: set[str]) -> TableCounts:
    """Counts into ``table`` for records of the ``copartitioned`` topics, reported by the
    metrics; pending tallies go to the changelog when partitions are revoked or the worker
    stops."""

    async def send_changelog(partition: int, key: str, tally: dict[str, int]) -> None:
        sent = await table.changelog_topic.send(
            key=key, value=tally, partition=partition,
            key_serializer=table.key_serializer, value_serializer=table.value_serializer)
        # Bounded: a rebalance or shutdown waits for this, and frozen brokers never answer.
        await asyncio.wait_for(sent, timeout=10)

    counts = TableCounts(
        table, copartitioned,
        owned=lambda: {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()},
        send_changelog=send_changelog)
    metrics.use_counts(counts)

    @app.on_partitions_revoked.connect
    async def write_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        await counts.write_pending({(tp.topic, tp.partition) for tp in revoked})

    @app.on_before_shutdown.connect
    async def write_at_shutdown(app: faust.App, **_: Any) -> None:
        await counts.write_pending()

    return counts
