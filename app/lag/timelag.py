"""Time lag estimated from a sliding window of (time, end offset) points per partition, in
the manner of kafka-lag-exporter: the time at which the log's end was at the group's
committed offset is read off the line through the window's points (interpolated between the
two points around it, else extrapolated along the window's overall trend), and the time lag
is how long ago that was.

Kafka does not say when a record at a given offset was written without reading it, so this
is an estimate; it needs two points with different offsets, and is ``None`` until then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    at_ms: int
    offset: int


class EndOffsetTable:
    """The last ``limit`` (time, end offset) points of one partition."""

    def __init__(self, limit: int = 60):
        if limit < 2:
            raise ValueError("a time-lag window needs room for at least 2 points")
        self.points: deque[Point] = deque(maxlen=limit)

    def add(self, at_ms: int, offset: int) -> None:
        points = self.points
        if points:
            last = points[-1]
            if at_ms <= last.at_ms or offset < last.offset:
                return  # out of order, or a log that went back (topic re-created): ignore
            if len(points) >= 2 and points[-2].offset == last.offset == offset:
                # An idle partition: keep one flat segment and move its right end, so the
                # window is not filled with copies of the same offset.
                points[-1] = Point(at_ms, offset)
                return
        points.append(Point(at_ms, offset))

    def time_of(self, offset: int) -> float | None:
        """Estimated time (ms) at which the end of the log was at ``offset``."""
        points = list(self.points)
        if len(points) < 2:
            return None
        left, right = points[0], points[-1]  # extrapolate along the whole window by default
        for earlier, later in zip(reversed(points[:-1]), reversed(points[1:]), strict=True):
            if earlier.offset <= offset <= later.offset:
                left, right = earlier, later
                break
        if right.offset == left.offset:
            return None if offset != right.offset else float(left.at_ms)
        slope = (right.at_ms - left.at_ms) / (right.offset - left.offset)
        return right.at_ms - (right.offset - offset) * slope

    def lag_seconds(self, committed: int, now_ms: int) -> float | None:
        """Seconds between now and when the log's end was at the committed offset; 0 for a
        group that has read everything the window knows of."""
        if self.points and committed >= self.points[-1].offset:
            return 0.0
        written = self.time_of(committed)
        if written is None:
            return None
        return max(now_ms - written, 0.0) / 1000
