"""Replays started from the console, through the same engine as `recovery replay`
(app/replay/engine.py): the same selection, targets, rate limit, replay ids and progress
store, so a replay started here is resumable by name (here or with `recovery replay --name`)
and a dead letter replayed twice carries the same replay id.

A replay runs in a thread of its own (the engine blocks); the page polls its progress. The
request that starts it first checks what the command line checks (topics exist, the name is
not taken by other options, something matches), so bad input is refused with nothing done.
A preview is the engine's dry run, bounded in time, plus a sample of the first records."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from app.contracts import topics as t
from app.replay import progress as pg
from app.replay.engine import Replay, ReplayOutcome, make_consumer, make_producer
from app.replay.selection import Selection, compile_selection, describe
from app.replay.store import ProgressStore, offsets_at, topic_partitions, watermarks
from app.replay.summary import Row
from app.replay.targets import INCIDENT, ORIGINAL, REDELIVERY, TOPIC, Target
from app.settings import Settings
from app.worker.web.dead_letters import (
    FILTERS,
    BadRequest,
    Record,
    filters_of,
    first_matches,
    read_one,
    selection_of,
)

DEFAULT_RATE = 100.0  # records per second, unless the form says otherwise
MAX_RATE = 100_000.0
PREVIEW_S = 10.0  # a preview's dry run reads at most this long
SAMPLE = 5
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TARGETS = (INCIDENT, REDELIVERY, ORIGINAL)


@dataclass(frozen=True)
class ReplayRequest:
    """What a preview or start form asks for."""

    source: str  # "dead-letters" or "poison"
    topic: str  # the topic read (the DLQ or the poison topic)
    filters: dict[str, list[str]]
    selection: Selection
    record: tuple[int, int] | None  # one record (partition, offset) instead of the filters
    target: Target
    rate: float
    name: str
    restart: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """The replay command's options for the same replay (so the same default name)."""
        f = self.filters
        options: dict[str, Any] = {
            "dlq": self.topic, "topic": f["topic"], "group": f["group"],
            "error_type": f["error_type"], "key": f["key"], "header": [],
            "since": (f["since"] or [None])[0], "until": (f["until"] or [None])[0],
            "to": (f"topic:{self.target.topic}" if self.target.kind == TOPIC
                   else self.target.kind)}
        if self.record is not None:
            partition, offset = self.record
            options = {"dlq": self.topic, "record": f"{partition}:{offset}", "to": options["to"]}
        return options

    @property
    def fingerprint(self) -> str:
        return pg.fingerprint(self.options)

    def describe(self) -> str:
        what = "record {}:{}".format(*self.record) if self.record else describe(self.selection)
        return f"{what} of {self.topic} -> {self.target.describe()}"


def _one(form: Mapping[str, Any] | Any, name: str) -> str | None:
    values = [v for v in (form.getall(name, []) if hasattr(form, "getall")
                          else [form.get(name)]) if isinstance(v, str) and v.strip()]
    return values[0].strip() if values else None


def parse_request(form: Any, settings: Settings, now_ms: int) -> ReplayRequest:
    """A preview or start form; BadRequest on anything the user has to fix."""
    source = _one(form, "source") or "dead-letters"
    if source not in ("dead-letters", "poison"):
        raise BadRequest(f"bad source {source!r}: use dead-letters or poison")
    topic = settings.topic(t.DLQ if source == "dead-letters" else t.POISON)
    record_text = _one(form, "record")
    record = None
    if record_text:
        partition, sep, offset = record_text.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise BadRequest(f"bad record {record_text!r}: use PARTITION:OFFSET")
        record = (int(partition), int(offset))
        filters = {name: [] for name in FILTERS}
    else:
        filters = filters_of(form)
    selection = selection_of(filters, now_ms)
    to = _one(form, "to") or (INCIDENT if source == "dead-letters" else REDELIVERY)
    to_topic = _one(form, "to_topic")
    if to_topic:
        target = Target(TOPIC, to_topic)
    elif to == INCIDENT:
        target = Target(INCIDENT, settings.topic(t.COMMANDS))
    elif to in (REDELIVERY, ORIGINAL):
        target = Target(to)
    else:
        raise BadRequest(f"bad target {to!r}: use {', '.join(TARGETS)} or a topic")
    rate_text = _one(form, "rate")
    try:
        rate = float(rate_text) if rate_text else DEFAULT_RATE
    except ValueError:
        raise BadRequest(f"bad rate {rate_text!r}: records per second, a number") from None
    if not 0 < rate <= MAX_RATE:
        raise BadRequest(f"bad rate {rate_text!r}: more than 0, at most {MAX_RATE:g}")
    request = ReplayRequest(source, topic, filters, selection, record, target, rate, "",
                            restart=_one(form, "restart") in ("1", "yes", "on", "true"))
    name = _one(form, "name") or pg.default_name(request.fingerprint)
    if not NAME.match(name):
        raise BadRequest(f"bad replay name {name!r}: letters, digits, '.', '_' and '-'")
    return ReplayRequest(source, topic, filters, selection, record, target, rate, name,
                         restart=request.restart)


# ---- preview --------------------------------------------------------------------------------

@dataclass
class Preview:
    scanned: int
    matched: int
    would_send: int
    unroutable: int
    missing: dict[str, int]  # target topic that does not exist -> records
    rows: list[dict[str, Any]]
    sample: list[Record]
    complete: bool  # the dry run read everything (not cut by its time bound)


def _missing_topics(consumer: Consumer, topics: set[str]) -> set[str]:
    return {name for name in topics if topic_partitions(consumer, name) is None}


def _check_topics(consumer: Consumer, request: ReplayRequest) -> None:
    if topic_partitions(consumer, request.topic) is None:
        raise BadRequest(f"unknown topic {request.topic}")
    for name in request.filters["topic"]:
        if topic_partitions(consumer, name) is None:
            raise BadRequest(f"unknown topic {name}")
    if request.target.kind in (TOPIC, INCIDENT) and request.target.topic and \
            topic_partitions(consumer, request.target.topic) is None:
        raise BadRequest(f"unknown topic {request.target.topic}")


class NotFound(LookupError):
    pass


def _start_progress(consumer: Consumer, request: ReplayRequest, now_ms: int) -> pg.Progress:
    topic = request.topic
    if request.record is not None:
        partition, offset = request.record
        if read_one(consumer, topic, partition, offset) is None:
            raise NotFound(f"no record at {topic} partition {partition} offset {offset}")
        return pg.start(request.name, request.fingerprint, request.options, topic,
                        low={partition: offset}, high={partition: offset + 1}, now_ms=now_ms)
    partitions = topic_partitions(consumer, topic) or []
    low, high = watermarks(consumer, topic, partitions)
    since, until = request.selection.since_ms, request.selection.until_ms
    seek = offsets_at(consumer, topic, partitions, high, since) if since is not None else None
    return pg.start(request.name, request.fingerprint, request.options, topic, low=low,
                    high=high, seek=seek, since_ms=since, until_ms=until, now_ms=now_ms)


def _rows(summary: Counter[Row], missing: set[str]) -> list[dict[str, Any]]:
    return [{"original_topic": r[0], "group": r[1], "error_type": r[2], "target": r[3],
             "missing": r[3] in missing, "records": n}
            for r, n in sorted(summary.items(), key=lambda item: (-item[1], item[0]))]


def preview(settings: Settings, request: ReplayRequest, *, max_s: float = PREVIEW_S
            ) -> Preview:
    """The engine's dry run over the selection (nothing sent, nothing stored)."""
    consumer = make_consumer(settings)
    try:
        _check_topics(consumer, request)
        progress = _start_progress(consumer, request, int(time.time() * 1000))
        deadline = time.monotonic() + max_s
        engine = Replay(consumer=consumer, producer=None, store=None, progress=progress,
                        target=request.target, predicate=compile_selection(request.selection),
                        dry_run=True, stop=lambda: time.monotonic() >= deadline)
        outcome = engine.run()
        targets = {row[3] for row in outcome.summary} - {"(unroutable)"}
        missing = _missing_topics(consumer, targets)
        rows = _rows(outcome.summary, missing)
        p = outcome.progress
        missing_counts = {row["target"]: row["records"] for row in rows if row["missing"]}
        if request.record is not None:
            sample = [r for r in [read_one(consumer, request.topic, *request.record)] if r]
        else:
            sample = first_matches(consumer, request.topic, request.selection,
                                   request.filters, SAMPLE)
        return Preview(scanned=p.scanned, matched=p.matched,
                       would_send=p.matched - p.unroutable - sum(missing_counts.values()),
                       unroutable=p.unroutable, missing=missing_counts, rows=rows,
                       sample=sample, complete=not outcome.interrupted)
    finally:
        consumer.close()


# ---- running replays ------------------------------------------------------------------------

@dataclass
class Job:
    name: str
    description: str
    target: str
    progress: pg.Progress
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = pg.RUNNING
    error: str | None = None
    missing: dict[str, int] = field(default_factory=dict)
    unroutable_reason: str | None = None
    rate: float | None = None
    already_complete: bool = False
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def status(self) -> dict[str, Any]:
        p = self.progress
        elapsed = (self.finished or time.monotonic()) - self.started
        return {"name": self.name, "state": self.state, "description": self.description,
                "target": self.target, "sent": p.sent, "matched": p.matched,
                "scanned": p.scanned, "total": p.total, "remaining": p.remaining,
                "unroutable": p.unroutable, "not_sent": p.not_sent, "missing": self.missing,
                "error": self.error, "already_complete": self.already_complete,
                "running": self.state == pg.RUNNING, "elapsed_s": round(elapsed, 1),
                "rate": self.rate, "started_ms": p.started_ms,
                "updated_ms": p.updated_ms, "source": "this worker"}


def stored_status(progress: pg.Progress) -> dict[str, Any]:
    """A replay this worker did not run (or ran before a restart), from the progress topic."""
    state = progress.state if progress.state != pg.RUNNING else pg.INTERRUPTED
    return {"name": progress.name, "state": state,
            "description": pg.describe_options(progress.options), "target":
            progress.options.get("to"), "sent": progress.sent, "matched": progress.matched,
            "scanned": progress.scanned, "total": progress.total,
            "remaining": progress.remaining, "unroutable": progress.unroutable,
            "not_sent": progress.not_sent, "missing": {}, "error": None,
            "already_complete": False, "running": False, "elapsed_s": None, "rate": None,
            "started_ms": progress.started_ms, "updated_ms": progress.updated_ms,
            "source": "progress topic"}


class Busy(Exception):
    pass


class Replays:
    """The replays this worker runs or ran, by name."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> Job | None:
        with self.lock:
            return self.jobs.get(name)

    def load(self, name: str) -> pg.Progress | None:
        store = ProgressStore(self.settings, None)
        consumer = make_consumer(self.settings)
        try:
            if not store.exists(consumer):
                return None
        finally:
            consumer.close()
        return store.load(name)

    def status(self, name: str) -> dict[str, Any] | None:
        job = self.get(name)
        if job is not None:
            return job.status()
        stored = self.load(name)
        return stored_status(stored) if stored is not None else None

    def start(self, request: ReplayRequest) -> Job:
        """Checks like the command line, then runs the replay in a thread. Raises
        BadRequest (nothing done), NotFound (no such record) or Busy (running already)."""
        with self.lock:
            running = self.jobs.get(request.name)
            if running is not None and running.state == pg.RUNNING:
                raise Busy(f"replay {request.name} is running")
        consumer = make_consumer(self.settings)
        try:
            job = self._prepare(consumer, request)
        except BaseException:
            consumer.close()
            raise
        if job.state != pg.RUNNING:
            consumer.close()
            with self.lock:
                self.jobs[request.name] = job
            return job
        with self.lock:
            running = self.jobs.get(request.name)
            if running is not None and running.state == pg.RUNNING:
                consumer.close()
                raise Busy(f"replay {request.name} is running")
            self.jobs[request.name] = job
        job.thread = threading.Thread(target=self._run, args=(job, consumer, request),
                                      name=f"replay-{request.name}", daemon=True)
        job.thread.start()
        return job

    def stop(self, name: str) -> bool:
        job = self.get(name)
        if job is None or job.state != pg.RUNNING:
            return False
        job.stop.set()
        return True

    def stop_all(self, timeout: float = 10) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)

    def _prepare(self, consumer: Consumer, request: ReplayRequest) -> Job:
        from app.replay.targets import unroutable_reason

        _check_topics(consumer, request)
        store = ProgressStore(self.settings, None)
        if not store.exists(consumer):
            raise BadRequest(f"unknown topic {store.topic} (keeps replay progress; "
                             "`recovery topics apply` creates it)")
        stored = None if request.restart else store.load(request.name)
        try:
            progress = pg.resumable(stored, request.name, request.fingerprint)
        except pg.ProgressMismatch as exc:
            raise BadRequest(str(exc).replace("--restart", "restart")) from exc
        job = Job(request.name, request.describe(), request.target.describe(),
                  progress or pg.start(request.name, request.fingerprint, request.options,
                                       request.topic, low={}, high={}, now_ms=0),
                  unroutable_reason=unroutable_reason(request.target), rate=request.rate)
        if progress is not None and progress.state == pg.DONE:
            job.state, job.already_complete, job.finished = pg.DONE, True, time.monotonic()
            return job
        if progress is None:
            progress = _start_progress(consumer, request, int(time.time() * 1000))
            if progress.total == 0:
                raise BadRequest(f"no dead letters match: {request.topic} has no records in "
                                 "the selected range")
        job.progress = progress
        return job

    def _run(self, job: Job, consumer: Consumer, request: ReplayRequest) -> None:
        from dataclasses import replace

        errors: list[str] = []
        producer = None
        try:
            producer = make_producer(self.settings, errors)
            selection = request.selection
            if job.progress.scanned:  # resumed: the times resolved when it started
                selection = replace(selection, since_ms=job.progress.since_ms,
                                    until_ms=job.progress.until_ms)

            def seen(current: pg.Progress) -> None:
                job.progress = current

            engine = Replay(consumer=consumer, producer=producer,
                            store=ProgressStore(self.settings, producer),
                            progress=job.progress, target=request.target,
                            predicate=compile_selection(selection), delivery_errors=errors,
                            rate=request.rate, stop=job.stop.is_set, on_progress=seen)
            outcome: ReplayOutcome = engine.run()
            job.progress = outcome.progress
            job.missing = dict(outcome.missing)
            if outcome.delivery_error:
                job.state, job.error = pg.FAILED, f"delivery failed: {outcome.delivery_error}"
            else:
                job.state = pg.INTERRUPTED if outcome.interrupted else pg.DONE
        except Exception as exc:  # shown on the page; progress is stored up to the last ack
            job.state, job.error = pg.FAILED, f"replay stopped: {exc}"
        finally:
            job.finished = time.monotonic()
            consumer.close()
            if producer is not None:
                producer.flush(30)
