"""Replaying with several processes: the dead-letter partitions are shared out among worker
processes, each with its own consumer and producer running the same replay loop (one Python
thread is the limit of one process). Each worker reports its progress after its own flush;
this process merges the reports and stores the merged progress, so stored progress still
never runs ahead of what the broker acknowledged.

Workers are forked once this process has closed its own Kafka clients (librdkafka's threads
do not survive a fork); they stop when asked, and on their own when this process dies."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from confluent_kafka import Producer

from app.replay.engine import Counts, Replay, ReplayOutcome, make_consumer, make_producer
from app.replay.progress import DONE, FAILED, INTERRUPTED, RUNNING, Progress
from app.replay.selection import Selection, compile_selection
from app.replay.store import ProgressStore
from app.replay.targets import Target
from app.settings import Settings

AUTO_MIN_RECORDS = 100_000  # below this, starting processes costs more than it saves
AUTO_MAX_WORKERS = 4


def auto_workers(remaining: Mapping[int, int], cpus: int | None, *, rate: float | None,
                 dry_run: bool) -> int:
    """One process for small, rate-limited or dry runs; else one per partition with
    records left, at most AUTO_MAX_WORKERS, and one only on a single CPU."""
    busy = sum(1 for n in remaining.values() if n > 0)
    if dry_run or rate or (cpus or 1) < 2 or sum(remaining.values()) < AUTO_MIN_RECORDS:
        return 1
    return max(1, min(busy, AUTO_MAX_WORKERS))


def share(remaining: Mapping[int, int], workers: int) -> list[list[int]]:
    """Partitions with records left, shared out so that each worker gets about as many
    records: the largest first, each to the least loaded worker."""
    loads = [0] * max(1, workers)
    shares: list[list[int]] = [[] for _ in loads]
    for p, n in sorted(remaining.items(), key=lambda item: (-item[1], item[0])):
        if n <= 0:
            continue
        least = loads.index(min(loads))
        shares[least].append(p)
        loads[least] += n
    return [sorted(s) for s in shares if s]


def portion(progress: Progress, partitions: list[int]) -> Progress:
    """The part of a replay one worker does, with counts of its own."""
    return replace(progress, end={p: progress.end[p] for p in partitions},
                   next={p: progress.next[p] for p in partitions}, scanned=0, matched=0,
                   sent=0, unroutable=0, not_sent=0, state=RUNNING)


def merged(base: Progress, reports: Mapping[int, Progress], state: str, now_ms: int) -> Progress:
    """The whole replay's progress from the last report of every worker."""
    nxt: dict[int, int] = {}
    for report in reports.values():
        nxt.update(report.next)
    return base.advanced(nxt, scanned=sum(r.scanned for r in reports.values()),
                         matched=sum(r.matched for r in reports.values()),
                         sent=sum(r.sent for r in reports.values()),
                         unroutable=sum(r.unroutable for r in reports.values()),
                         not_sent=sum(r.not_sent for r in reports.values()),
                         state=state, now_ms=now_ms)


class _PipeSink:
    """A worker's progress store: reports go to the parent, which stores them."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def save(self, progress: Progress) -> None:
        self.conn.send(("progress", progress.to_json()))


def _worker(settings: Settings, portion_json: bytes, target: Target, selection: Selection,
            rate: float | None, conn: Connection, stop_event: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    errors: list[str] = []
    try:
        consumer = make_consumer(settings)
        producer = make_producer(settings, errors)
        engine = Replay(
            consumer=consumer, producer=producer, store=_PipeSink(conn),
            progress=Progress.from_json(portion_json), target=target,
            predicate=compile_selection(selection), delivery_errors=errors, rate=rate,
            stop=lambda: stop_event.is_set() or os.getppid() != parent,
            on_progress=lambda p: conn.send(("tick", (p.scanned, p.matched, p.sent))))
        outcome = engine.run()
        conn.send(("done", {"counts": outcome.run.__dict__, "missing": dict(outcome.missing),
                            "interrupted": outcome.interrupted,
                            "delivery_error": outcome.delivery_error}))
        conn.close()
        # Everything sent is acknowledged (the loop's last checkpoint flushed), the consumer
        # holds no group and commits nothing: tearing the clients down would only make the
        # parent wait for their threads.
        os._exit(0)
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone: its last stored progress stands
    except Exception as exc:  # reported, then this worker ends
        with contextlib.suppress(BrokenPipeError, EOFError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_parallel(settings: Settings, progress: Progress, target: Target, selection: Selection,
                 workers: int, *, store: ProgressStore, producer: Callable[[], Producer],
                 rate: float | None, stop: Callable[[], bool],
                 on_progress: Callable[[Progress], None] | None = None) -> ReplayOutcome:
    """The replay over ``workers`` processes; ``store`` keeps the merged progress, with the
    producer made by ``producer`` once the workers are forked."""
    started = time.monotonic()
    remaining = {p: progress.end[p] - n for p, n in progress.to_read().items()}
    context = multiprocessing.get_context("fork")
    stop_event = context.Event()
    shares = share(remaining, workers)
    procs: dict[int, Any] = {}
    conns: dict[Connection, int] = {}
    reports: dict[int, Progress] = {}
    ticks: dict[int, tuple[int, int, int]] = {}
    results: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    for i, partitions in enumerate(shares):
        part = portion(progress, partitions)
        reports[i] = part
        ours, theirs = context.Pipe(duplex=False)
        proc = context.Process(
            target=_worker, name=f"replay-worker-{i}", daemon=True,
            args=(settings, part.to_json(), target, selection,
                  rate / len(shares) if rate else None, theirs, stop_event, os.getpid()))
        proc.start()
        theirs.close()
        procs[i] = proc
        conns[ours] = i
    sender = store.producer = producer()
    while conns:
        if stop() and not stop_event.is_set():
            stop_event.set()
        for conn in wait(list(conns), timeout=0.2):
            i = conns[conn]  # type: ignore[index]
            try:
                kind, body = conn.recv()  # type: ignore[union-attr]
            except EOFError:
                del conns[conn]  # type: ignore[arg-type]
                continue
            if kind == "tick":
                ticks[i] = body
                if on_progress is not None:
                    scanned, matched, sent = (sum(t[k] for t in ticks.values()) for k in range(3))
                    on_progress(replace(progress, scanned=progress.scanned + scanned,
                                        matched=progress.matched + matched,
                                        sent=progress.sent + sent))
            elif kind == "progress":
                reports[i] = Progress.from_json(body)
                store.save(merged(progress, reports, RUNNING, _now_ms()))
                sender.poll(0)
            elif kind == "done":
                results[i] = body
            else:
                errors.append(body)
                stop_event.set()
    for proc in procs.values():
        proc.join(timeout=30)
        if proc.exitcode not in (0, None) and not errors:
            errors.append(f"replay worker {proc.name} ended with exit code {proc.exitcode}")
    delivery = next((r["delivery_error"] for r in results.values() if r["delivery_error"]), None)
    finished = len(results) == len(shares) and all(
        not r["interrupted"] for r in results.values())
    state = FAILED if errors or delivery else (DONE if finished else INTERRUPTED)
    final = merged(progress, reports, state, _now_ms())
    store.save(final)
    sender.flush(60)
    counts = Counts()
    missing: Counter[str] = Counter()
    for r in results.values():
        for key, value in r["counts"].items():
            setattr(counts, key, getattr(counts, key) + value)
        missing.update(r["missing"])
    if errors and not delivery:
        raise RuntimeError(errors[0])
    return ReplayOutcome(final, counts, time.monotonic() - started, interrupted=state != DONE,
                   missing=missing, delivery_error=delivery)


def _now_ms() -> int:
    return int(time.time() * 1000)
