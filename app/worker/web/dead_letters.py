"""Pages of the dead-letter (or poison) topic, read straight from the broker for the console.

A page is read with a consumer of its own (assigned partitions, no group, nothing ever
committed), closed when the page is done. The filters are the replay command's, parsed and
compiled by app/replay/selection.py; the time range also bounds what is read, through the
broker's time index (offsets_for_times). A page never scans the whole topic: it reads at
most ``max_scan`` records and ``max_s`` seconds, and says when it stopped early.

Newest first, each partition is read backwards in chunks from the cursor; oldest first,
forwards. The cursor is, per partition, where the next page goes on (newest first: the
offset below which it reads; oldest first: the offset it reads from), encoded as
``0:17,1:5`` in the page's URL. Blocking calls; the web views run them in a thread."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from app.kafka.config import consumer_config
from app.replay.selection import (
    Predicate,
    Selection,
    SelectionError,
    build_selection,
    compile_selection,
)
from app.replay.store import offsets_at, topic_partitions, watermarks
from app.settings import Settings

NEWEST = "newest"
OLDEST = "oldest"
DEFAULT_LIMIT = 25
MAX_LIMIT = 200
MAX_SCAN = 5_000  # records one page reads at most
MAX_PAGE_S = 5.0  # seconds one page reads at most
CHUNK = 200  # records read at a time from one partition, going backwards
TIMEOUT_S = 10.0


class BadRequest(ValueError):
    """Input the user can fix: answered with 400 and a plain message, nothing read."""


# ---- parsing the query (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """A list page's filters, order, cursor and size, as the URL gives them."""

    selection: Selection
    filters: dict[str, list[str]]  # as given: topic, group, error_type, key, since, until
    order: str = NEWEST
    cursor: dict[int, int] | None = None
    limit: int = DEFAULT_LIMIT

    @property
    def predicate(self) -> Predicate | None:
        return compile_selection(self.selection)


FILTERS = ("topic", "group", "error_type", "key", "since", "until")


def encode_cursor(positions: Mapping[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_cursor(text: str) -> dict[int, int]:
    """``0:17,1:5`` -> {0: 17, 1: 5}; raises BadRequest on anything else."""
    positions: dict[int, int] = {}
    for part in text.split(","):
        partition, sep, offset = part.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise BadRequest(f"bad cursor {text!r}: use PARTITION:OFFSET,...")
        if int(partition) in positions:
            raise BadRequest(f"bad cursor {text!r}: partition {partition} twice")
        positions[int(partition)] = int(offset)
    return positions


def _values(query: Any, name: str) -> list[str]:
    """Every non-empty value of a query parameter (a form sends empty fields too)."""
    if hasattr(query, "getall"):
        raw = query.getall(name, [])
    else:
        found = query.get(name)
        raw = [] if found is None else found if isinstance(found, list | tuple) else [found]
    return [v.strip() for v in raw if isinstance(v, str) and v.strip()]


def filters_of(query: Any) -> dict[str, list[str]]:
    return {name: _values(query, name) for name in FILTERS}


def selection_of(filters: Mapping[str, list[str]], now_ms: int) -> Selection:
    """The replay command's selection for these filters; BadRequest on a bad time."""
    since, until = filters.get("since") or [], filters.get("until") or []
    if len(since) > 1 or len(until) > 1:
        raise BadRequest("give since and until once each")
    try:
        return build_selection(topics=filters.get("topic", ()), groups=filters.get("group", ()),
                               error_types=filters.get("error_type", ()),
                               keys=filters.get("key", ()), since=since[0] if since else None,
                               until=until[0] if until else None, now_ms=now_ms)
    except SelectionError as exc:
        raise BadRequest(str(exc)) from exc


def parse_query(query: Any, now_ms: int) -> Query:
    """A list page's query parameters (a mapping, or aiohttp's MultiDict)."""
    filters = filters_of(query)
    selection = selection_of(filters, now_ms)
    order = (_values(query, "order") or [NEWEST])[0]
    if order not in (NEWEST, OLDEST):
        raise BadRequest(f"bad order {order!r}: use {NEWEST} or {OLDEST}")
    cursor_text = (_values(query, "cursor") or [None])[0]
    cursor = decode_cursor(cursor_text) if cursor_text else None
    limit_text = (_values(query, "limit") or [str(DEFAULT_LIMIT)])[0]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadRequest(f"bad limit {limit_text!r}: use 1 to {MAX_LIMIT}")
    return Query(selection, filters, order, cursor, int(limit_text))


def parse_position(partition: str, offset: str) -> tuple[int, int]:
    if not partition.isdigit() or not offset.isdigit():
        raise BadRequest(f"bad record position {partition}/{offset}: use PARTITION/OFFSET")
    return int(partition), int(offset)


# ---- reading (Kafka) ------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    def header(self, name: str) -> str | None:
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return None if found is None else found.decode(errors="replace")


@dataclass
class Page:
    records: list[Record]
    next_cursor: dict[int, int] | None  # None: nothing more to read
    scanned: int
    stopped_early: bool  # the scan or time bound ended it before the page was full
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)  # readable [lo, hi)


def open_reader(settings: Settings) -> Consumer:
    """Assigned partitions only: no group membership, nothing committed."""
    return Consumer(consumer_config(settings, f"recovery-console-{uuid.uuid4()}", **{
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }))


class NoSuchTopic(LookupError):
    pass


def bounds(consumer: Consumer, topic: str, selection: Selection
           ) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [lo, hi) the time range can hold (the whole partition
    without one), by the broker's time index."""
    partitions = topic_partitions(consumer, topic, timeout=TIMEOUT_S)
    if partitions is None:
        raise NoSuchTopic(f"topic {topic} does not exist")
    low, high = watermarks(consumer, topic, partitions, timeout=TIMEOUT_S)
    lo, hi = dict(low), dict(high)
    if selection.since_ms is not None:
        since = offsets_at(consumer, topic, partitions, high, selection.since_ms, TIMEOUT_S)
        lo = {p: max(lo[p], since[p]) for p in partitions}
    if selection.until_ms is not None:
        until = offsets_at(consumer, topic, partitions, high, selection.until_ms, TIMEOUT_S)
        hi = {p: min(hi[p], until[p]) for p in partitions}
    return {p: (lo[p], max(lo[p], hi[p])) for p in partitions}


def _read(consumer: Consumer, topic: str, partition: int, start: int, end: int,
          deadline: float) -> tuple[list[Any], int]:
    """The messages of [start, end) of one partition (fewer when the deadline comes), and
    the offset reading reached."""
    if start >= end:
        return [], start
    consumer.assign([TopicPartition(topic, partition, start)])
    out: list[Any] = []
    reached = start
    try:
        while reached < end and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=min(500, end - reached), timeout=0.2)
            for m in messages:
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return out, end
                    continue
                if m.offset() >= end:
                    return out, end
                out.append(m)
                reached = m.offset() + 1
    finally:
        consumer.unassign()
    return out, reached


def _record(topic: str, m: Any) -> Record:
    return Record(topic, m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(),
                  list(m.headers() or []))


def _selected(predicate: Predicate | None, m: Any) -> bool:
    return predicate is None or predicate(m.key(), dict(m.headers() or []), m.timestamp()[1])


def read_page(consumer: Consumer, topic: str, query: Query, *, max_scan: int = MAX_SCAN,
              max_s: float = MAX_PAGE_S, chunk: int = CHUNK) -> Page:
    """One page of matching records, newest or oldest first (see the module's doc)."""
    ranges = bounds(consumer, topic, query.selection)
    predicate = query.predicate
    deadline = time.monotonic() + max_s
    newest = query.order == NEWEST
    # per partition: where reading goes on (newest: exclusive upper end; oldest: start)
    position = {p: (hi if newest else lo) for p, (lo, hi) in ranges.items()}
    for p, off in (query.cursor or {}).items():
        if p in position:
            lo, hi = ranges[p]
            position[p] = min(max(off, lo), hi)
    found: dict[int, list[Record]] = {p: [] for p in ranges}
    scanned = 0
    stopped = False

    def more(p: int) -> bool:
        lo, hi = ranges[p]
        return position[p] > lo if newest else position[p] < hi

    for p in sorted(ranges):
        lo, hi = ranges[p]
        # a page's worth first (all a page without filters needs), then twice as many each
        # time, up to ``chunk``, while a filter keeps finding too few
        reads = 0
        while more(p) and len(found[p]) < query.limit:
            budget = max_scan - scanned
            if budget <= 0 or time.monotonic() >= deadline:
                stopped = True
                break
            room = query.limit - len(found[p])
            step = min(max(chunk, query.limit), query.limit << min(reads, 16))
            reads += 1
            if newest:
                start = max(lo, position[p] - min(step, budget))
                messages, reached = _read(consumer, topic, p, start, position[p], deadline)
                scanned += len(messages)
                if reached < position[p]:
                    # the deadline came mid-chunk: what was read is the older part of it,
                    # so nothing is shown from it and the next page reads it again
                    stopped = True
                    break
                hits = [_record(topic, m) for m in reversed(messages) if _selected(predicate, m)]
                found[p].extend(hits[:room])
                # the next page goes on below the last one shown (the rest read again)
                position[p] = hits[room - 1].offset if len(hits) > room else start
            else:
                end = min(hi, position[p] + min(step, budget))
                messages, reached = _read(consumer, topic, p, position[p], end, deadline)
                scanned += len(messages)
                hits = [_record(topic, m) for m in messages if _selected(predicate, m)]
                found[p].extend(hits[:room])
                position[p] = hits[room - 1].offset + 1 if len(hits) > room else reached
                if reached < end:
                    stopped = True
                    break
    merged = sorted((r for rs in found.values() for r in rs),
                    key=lambda r: (r.timestamp_ms, r.partition, r.offset), reverse=newest)
    page = merged[:query.limit]
    # records read but beyond this page go to the next one: each partition goes on from the
    # first record of it this page does not show
    shown = {(r.partition, r.offset) for r in page}
    for p, rs in found.items():
        left = [r for r in rs if (r.partition, r.offset) not in shown]
        if left:
            position[p] = (left[0].offset + 1) if newest else left[0].offset
    has_more = any(more(p) for p in ranges)
    return Page(page, dict(position) if has_more else None, scanned,
                stopped and len(page) < query.limit, ranges)


def read_one(consumer: Consumer, topic: str, partition: int, offset: int) -> Record | None:
    """The record at this position, None when the topic has none there."""
    partitions = topic_partitions(consumer, topic, timeout=TIMEOUT_S)
    if partitions is None or partition not in partitions:
        return None
    low, high = watermarks(consumer, topic, [partition], timeout=TIMEOUT_S)
    if not low[partition] <= offset < high[partition]:
        return None
    messages, _ = _read(consumer, topic, partition, offset, offset + 1,
                        time.monotonic() + TIMEOUT_S)
    for m in messages:
        if m.offset() == offset:
            return _record(topic, m)
    return None  # compacted away, or a transaction marker


def first_matches(consumer: Consumer, topic: str, selection: Selection,
                  filters: dict[str, list[str]], n: int) -> list[Record]:
    """A few records of the selection, oldest first (a replay preview's sample)."""
    return read_page(consumer, topic, Query(selection, filters, OLDEST, None, n)).records
