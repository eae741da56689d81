"""A bounded shutdown. Faust stops its services one by one and waits on each; with no broker
answering, a table or the producer can wait for minutes (a worker was seen still stopping
90 s after SIGTERM). The first SIGTERM/SIGINT starts a deadline on a thread of its own (it
fires even if the event loop is stuck); when it passes, or at a second signal, the process
exits at once. Nothing is lost by that: input whose outputs were not acknowledged was not
committed, and the next worker redoes it (docs/exactly-once.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_DEADLINE_PASSED = 3


class ShutdownDeadline:
    def __init__(self, timeout_s: float, *, report: Callable[[], list[str]] | None = None,
                 exit: Callable[[int], None] = os._exit):
        self.timeout_s = timeout_s
        self.report = report or (lambda: [])
        self._exit = exit
        self._lock = threading.Lock()
        self.signalled_at: float | None = None
        self._timer: threading.Timer | None = None

    def signalled(self, signum: int) -> None:
        """A stop signal: the first starts the deadline, a second exits now."""
        with self._lock:
            first = self.signalled_at is None
            if first:
                self.signalled_at = time.monotonic()
                self._timer = threading.Timer(self.timeout_s, self.expired)
                self._timer.daemon = True
                self._timer.start()
        name = signal.Signals(signum).name
        if first:
            log.info("%s: stopping; exiting at the latest in %.0f s", name, self.timeout_s)
            return
        log.warning("%s again: exiting now, without waiting for the shutdown", name)
        self._leave(128 + signum, "second signal")

    def expired(self) -> None:
        log.error("shutdown did not finish within %.0f s (RECOVERY_SHUTDOWN_TIMEOUT_S): "
                  "exiting; input not committed is redone by the next worker", self.timeout_s)
        self._leave(EXIT_DEADLINE_PASSED, "deadline passed")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _leave(self, code: int, why: str) -> None:
        try:
            for line in self.report():
                log.error("at exit (%s): %s", why, line)
        except Exception as exc:  # the report must never keep the process alive
            log.error("at exit: could not describe the unfinished work: %s", exc)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):  # exiting anyway
                handler.flush()
        sys.stderr.flush()
        self._exit(code)


def unfinished_work(app: object) -> list[str]:
    """What a stuck shutdown leaves behind, from Faust's in-memory view: per input
    partition, the highest offset handled and the offset committed."""
    from app.worker.consumer_state import consumer_state

    faust_view = consumer_state(app).get("faust") or {}
    committed = faust_view.get("committed_offset") or {}
    lines = []
    for name, (_lowest, acked, _pending) in sorted(
            (faust_view.get("acked_min_max_and_pending") or {}).items()):
        last_commit = committed.get(name)
        if acked is not None and (last_commit is None or last_commit < acked):
            lines.append(f"{name}: handled up to offset {acked}, last commit at "
                         f"{last_commit} (the rest is redone by the next worker)")
    return lines or ["no handled input was left uncommitted"]


def worker_with_deadline(app: object, timeout_s: float, loglevel: str) -> object:
    """A Faust worker whose stop signals go through a ShutdownDeadline."""
    import faust

    deadline = ShutdownDeadline(timeout_s, report=lambda: unfinished_work(app))

    # Named Worker: mode labels log lines with the class name, and tools (and tests) look
    # for "[^Worker]: Ready".
    class Worker(faust.Worker):
        def _schedule_shutdown(self, signal: signal.Signals) -> None:  # type: ignore[override]
            deadline.signalled(int(signal))
            super()._schedule_shutdown(signal)

    worker = Worker(app, loglevel=loglevel)
    worker.shutdown_deadline = deadline  # type: ignore[attr-defined]
    return worker
