"""The worker's lag monitor: a collector and a tracker behind one blocking ``refresh`` (run
in an executor by the worker's timer) and the last view for the metrics and the page."""

from __future__ import annotations

import threading
import time

from app.lag.collect import parse_patterns
from app.lag.isolated import IsolatedCollector
from app.lag.tracker import LagTracker, LagView
from app.settings import Settings
from app.worker import metrics


class LagMonitor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.patterns = parse_patterns(settings.lag_groups)
        self.sized_topics = [settings.topic("recovery.dlq"), settings.topic("recovery.poison")]
        self.tracker = LagTracker(window=settings.lag_window)
        # In a child process: librdkafka's admin group calls can crash the process when the
        # group coordinator moves (app/lag/isolated.py); the worker must outlive that.
        self._collector: IsolatedCollector | None = None
        self._lock = threading.Lock()

    @property
    def view(self) -> LagView | None:
        return self.tracker.last

    def refresh(self) -> LagView:
        """Take a snapshot and fold it into the windows (blocking; one at a time)."""
        with self._lock:
            if self._collector is None:
                self._collector = IsolatedCollector(self.settings)
            started = time.perf_counter()
            try:
                snapshot = self._collector.snapshot(self.patterns,
                                                    sized_topics=self.sized_topics)
            except Exception:
                metrics.LAG_COLLECTION_ERRORS.inc()
                raise
            metrics.LAG_COLLECTION_SECONDS.set(time.perf_counter() - started)
            return self.tracker.observe(snapshot)
