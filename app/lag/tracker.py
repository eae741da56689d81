"""Keeps the sliding windows between snapshots and turns each snapshot into a view: per group
and partition the committed and end offsets, the offset lag, the estimated time lag and the
status, and per group its status, total lag and a short history for charts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from app.lag.collect import Snapshot
from app.lag.status import DEFAULT_MIN_SAMPLES, Sample, Status, group_status, partition_status
from app.lag.timelag import EndOffsetTable


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int | None
    lag: int | None
    time_lag_s: float | None
    status: Status


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    status: Status
    total_lag: int
    max_time_lag_s: float | None
    partitions: list[PartitionLag]


@dataclass(frozen=True)
class LagView:
    taken_at_ms: int
    groups: list[GroupLag]
    topic_sizes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def group(self, name: str) -> GroupLag | None:
        return next((g for g in self.groups if g.group == name), None)


class LagTracker:
    """Windows of ``window`` samples per group partition (status rules) and of
    ``time_window`` end-offset points per partition (time lag); ``history`` points of total
    lag per group for the page's chart."""

    def __init__(self, window: int = 10, *, time_window: int = 60, history: int = 120,
                 min_samples: int = DEFAULT_MIN_SAMPLES):
        self.window = window
        self.time_window = time_window
        self.min_samples = min_samples
        self.samples: dict[tuple[str, str, int], deque[Sample]] = {}
        self.end_tables: dict[tuple[str, int], EndOffsetTable] = {}
        self.history: dict[str, deque[tuple[int, int]]] = {}
        self.history_len = history
        self.last: LagView | None = None

    def observe(self, snapshot: Snapshot) -> LagView:
        now = snapshot.taken_at_ms
        for tp, end in snapshot.end_offsets.items():
            table = self.end_tables.get(tp)
            if table is None:
                table = self.end_tables[tp] = EndOffsetTable(self.time_window)
            table.add(now, end)
        groups: list[GroupLag] = []
        seen: set[tuple[str, str, int]] = set()
        for name, offsets in sorted(snapshot.groups.items()):
            rows: list[PartitionLag] = []
            for (topic, partition), committed in sorted(offsets.committed.items()):
                end = snapshot.end_offsets.get((topic, partition))
                key = (name, topic, partition)
                seen.add(key)
                if end is None:
                    rows.append(PartitionLag(name, topic, partition, committed, None, None,
                                             None, Status.OK))
                    continue
                window = self.samples.get(key)
                if window is None:
                    window = self.samples[key] = deque(maxlen=self.window)
                window.append(Sample(now, committed, end))
                table = self.end_tables[(topic, partition)]
                rows.append(PartitionLag(
                    name, topic, partition, committed, end, max(end - committed, 0),
                    table.lag_seconds(committed, now),
                    partition_status(list(window), group_active=offsets.active,
                                     min_samples=self.min_samples)))
            total = sum(r.lag or 0 for r in rows)
            # The group's time lag is its worst partition's; unknown if a lagging
            # partition's is unknown (it could be the worst).
            time_lags = [r.time_lag_s for r in rows if r.lag]
            max_time_lag = (None if None in time_lags
                            else max(time_lags, default=0.0 if rows else None))
            groups.append(GroupLag(name, offsets.state, group_status(r.status for r in rows),
                                   total, max_time_lag, rows))
            history = self.history.get(name)
            if history is None:
                history = self.history[name] = deque(maxlen=self.history_len)
            history.append((now, total))
        self._forget(seen, set(snapshot.groups), set(snapshot.end_offsets))
        self.last = LagView(now, groups, dict(snapshot.topic_sizes), list(snapshot.errors))
        return self.last

    def _forget(self, partitions: set[tuple[str, str, int]], groups: set[str],
                ends: set[tuple[str, int]]) -> None:
        """Drop what a snapshot no longer has (deleted groups, topics, filtered groups)."""
        for key in set(self.samples) - partitions:
            del self.samples[key]
        for key in set(self.end_tables) - ends:
            del self.end_tables[key]
        for key in set(self.history) - groups:
            del self.history[key]
