"""The incidents pages: the open incidents of this worker's partitions by state and age
(/incidents, /api/incidents), one incident's state, attempts, deadlines and every lifecycle
event in order (/incidents/<id>, /api/incidents/<id>), searched by incident id (which is the
failure event's work item id, else its event id: app/pipeline/intake.py), and the operator's
"resolve" (POST /incidents/<id>/acknowledge: the ack command a service sends after a
successful redelivery, so the incident completes as it would then).

The lifecycle history is read from the events topic with a plain consumer in a thread,
bounded: from the broker's time index at the incident's first known time (less a margin)
up to the high watermarks at the time of the request, within READ_BUDGET_S and MAX_SCAN
records; a cut read says so. The decoding is the worker's codec (app/avro/codec.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import faust
from aiohttp import web as aioweb
from confluent_kafka import KafkaError, TopicPartition
from faust.web import View

from app.contracts import headers as h
from app.contracts import lifecycle
from app.pipeline import watchdog
from app.pipeline.commands import ACK
from app.pipeline.decide import Incident
from app.pipeline.retry.backoff import delay_ms
from app.pipeline.stages import Pipeline
from app.pipeline.watchdog_stage import classification_of
from app.policy.watchdog import NONE, REDISPATCH_THEN_DEAD_LETTER
from app.settings import Settings
from app.worker.open_incidents import IndexedIncidents
from app.worker.web.dead_letters import open_reader
from app.worker.web.page import csrf_field, e, fmt_time, layout, may_operate
from app.worker.web.records import incident_link

READ_BUDGET_S = 10.0
MAX_SCAN = 200_000
MAX_ID_LENGTH = 512
MAX_LISTED = 500
# The history is read from the incident's first known time less this margin (a service's
# clock may run ahead of the worker's); an incident this worker does not hold, from LOOKBACK.
MARGIN_MS = 5 * 60 * 1000
LOOKBACK_MS = 24 * 3600 * 1000
REQUEST_TIMEOUT_S = READ_BUDGET_S + 20.0


class BadRequest(ValueError):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_incident_id(text: str | None) -> str:
    """An incident id as typed or taken from a URL: trimmed, non-empty, printable."""
    value = (text or "").strip()
    if not value:
        raise BadRequest("an incident id or work item id is required")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"an incident id has at most {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise BadRequest("an incident id has no control characters")
    return value


# ---- the open incidents ---------------------------------------------------------------------

def open_incidents(items: Iterable[tuple[str, Any]], now: int, *, state: str | None = None,
                   limit: int = MAX_LISTED) -> dict[str, Any]:
    """Counts and oldest age per state, and the incidents oldest first (at most limit)."""
    rows = []
    by_state: dict[str, dict[str, Any]] = {}
    for incident_id, value in items:
        incident = Incident.from_json(value, incident_id)
        age_s = max(0.0, (now - incident.updated_ms) / 1000)
        entry = by_state.setdefault(incident.state, {"count": 0, "oldest_s": 0.0})
        entry["count"] += 1
        entry["oldest_s"] = round(max(entry["oldest_s"], age_s), 1)
        if state is None or incident.state == state:
            rows.append({"incident_id": incident_id, "state": incident.state,
                         "attempts": incident.attempts, "age_s": round(age_s, 1),
                         "updated_ms": incident.updated_ms,
                         "first_failure_ms": incident.first_failure_ms,
                         "consumer_group": incident.consumer_group, "kind": incident.kind,
                         "url": incident_link(incident_id)})
    rows.sort(key=lambda r: (-r["age_s"], r["incident_id"]))
    return {"scope": "the partitions this worker holds", "state": state,
            "by_state": dict(sorted(by_state.items())), "total": len(rows),
            "incidents": rows[:limit], "cut": len(rows) > limit}


# ---- one incident ---------------------------------------------------------------------------

def deadlines(incident: Incident, pipeline: Pipeline) -> dict[str, Any]:
    """When the next retry is due and when the watchdog acts, as app/pipeline/watchdog.py
    computes them."""
    services = pipeline.services
    if incident.terminal or incident.unknown:
        return {"retry_due_ms": None, "watchdog_deadline_ms": None, "watchdog_action": None,
                "held_limit_ms": None}
    retry = services.policies.retry_for(classification_of(incident).type)
    due = None
    if incident.state == "retrying" and incident.attempts > 0 \
            and not incident.watchdog_redispatches:
        due = incident.updated_ms + delay_ms(retry, incident.attempts)
    action = services.watchdog.action_for(incident.state)
    return {"retry_due_ms": due,
            "watchdog_deadline_ms": None if action == NONE else
            watchdog.deadline(incident, retry, services.settings.ack_timeout_ms),
            "watchdog_action": action,
            # Only a retry is held for a consumer that is down (app/pipeline/watchdog.py).
            "held_limit_ms": incident.updated_ms + services.watchdog.held_limit_ms
            if action == REDISPATCH_THEN_DEAD_LETTER else None}


def incident_data(incident: Incident, pipeline: Pipeline) -> dict[str, Any]:
    return {
        "incident_id": incident.incident_id, "state": incident.state,
        "terminal": incident.terminal, "attempts": incident.attempts,
        "reports": incident.reports, "cycle": incident.cycle,
        "first_failure_ms": incident.first_failure_ms,
        "last_failure_ms": incident.last_failure_ms, "updated_ms": incident.updated_ms,
        "classification": incident.classification, "consumer_group": incident.consumer_group,
        "dispatch_target": incident.dispatch_target, "kind": incident.kind,
        "watchdog_redispatches": incident.watchdog_redispatches,
        "history": [{"at_ms": at, "step": what} for at, what in incident.history],
        "deadlines": deadlines(incident, pipeline),
    }


def since_of(incident: Incident | None, now: int) -> int:
    """Where the history read starts: the incident's earliest known time, less the margin."""
    if incident is None or incident.unknown:
        return now - LOOKBACK_MS
    known = [t for t in (incident.first_failure_ms, *(at for at, _ in incident.history[:1]))
             if t]
    return (min(known) if known else now - LOOKBACK_MS) - MARGIN_MS


@dataclass
class History:
    events: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    cut: str | None = None  # why the read stopped before the high watermarks


def event_data(event: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    occurred = event.get("occurred_at")
    if hasattr(occurred, "timestamp"):  # fastavro's timestamp-millis
        occurred = int(occurred.timestamp() * 1000)
    return {"event_id": event.get("event_id"), "event_type": event.get("event_type"),
            "occurred_at": occurred, "attempt": event.get("attempt"),
            "outcome": event.get("outcome"), "duration_ms": event.get("duration_ms"),
            "failure_event_id": event.get("failure_event_id"),
            "classification": event.get("classification"),
            "payload_json": event.get("payload_json"), "partition": partition,
            "offset": offset}


def read_history(consumer: Any, topic: str, incident_id: str, since_ms: int, decode: Any, *,
                 budget_s: float = READ_BUDGET_S, max_scan: int = MAX_SCAN) -> History:
    """The incident's lifecycle events (keyed by its id) from since_ms up to the high
    watermarks as they were at the start, in order."""
    history = History()
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        history.cut = f"topic {topic} cannot be read"
        return history
    partitions = sorted(metadata.partitions)
    starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions],
                                        timeout=10)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions}
    assign = []
    for tp in starts:
        if tp.offset >= 0 and tp.offset < ends[tp.partition]:
            assign.append(TopicPartition(topic, tp.partition, tp.offset))
    remaining = {tp.partition for tp in assign}
    if not assign:
        return history
    consumer.assign(assign)
    key = incident_id.encode()
    deadline = time.monotonic() + budget_s
    found: list[tuple[int, int, int, dict[str, Any]]] = []
    while remaining:
        if time.monotonic() >= deadline:
            history.cut = f"stopped after {budget_s:g} s"
            break
        for message in consumer.consume(min(500, max_scan - history.scanned), timeout=0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                history.cut = f"read failed: {error}"
                remaining.clear()
                break
            p, o = message.partition(), message.offset()
            if p not in remaining:
                continue
            history.scanned += 1
            if o >= ends[p] - 1:
                remaining.discard(p)
            if o >= ends[p] or message.key() != key:
                continue
            try:
                event = event_data(decode(message.value()), p, o)
            except ValueError as exc:  # the codec's DecodeError: shown, not fatal to the page
                event = event_data({"event_type": "(undecodable)", "payload_json": str(exc)},
                                   p, o)
            found.append((event["occurred_at"] or 0, p, o, event))
        if remaining and history.scanned >= max_scan and history.cut is None:
            history.cut = f"stopped after {max_scan} records"
            break
    # One partition holds an incident's events (keyed by it): offset order is their order;
    # the time sorts only across partitions (a topic repartitioned), and stably.
    if len({f[1] for f in found}) > 1:
        found.sort(key=lambda f: (f[0], f[1], f[2]))
    history.events = [f[3] for f in found]
    return history


# ---- HTML -----------------------------------------------------------------------------------

def search_form(value: str = "") -> str:
    return ('<form class="filters" method="get" action="/incidents">'
            '<label>incident id or work item <input name="q" id="incident-search" size="40" '
            f'value="{e(value)}"></label><button type="submit">Find</button></form>')


def _secs(value: float) -> str:
    return f"{value:.1f}"


def list_page(request: Any, data: dict[str, Any]) -> str:
    states = "".join(
        f'<tr class="state" data-state="{e(s)}"><td><a href="/incidents?state={quote(s)}">'
        f'{e(s)}</a></td><td class="num count">{v["count"]}</td>'
        f'<td class="num oldest">{_secs(v["oldest_s"])}</td></tr>'
        for s, v in data["by_state"].items()) or '<tr><td colspan="3">no open incident</td></tr>'
    rows = "".join(
        f'<tr class="incident" data-incident="{e(r["incident_id"])}">'
        f'<td><a href="{e(r["url"])}">{e(r["incident_id"])}</a></td>'
        f'<td class="state">{e(r["state"])}</td><td class="num">{r["attempts"]}</td>'
        f'<td class="num age">{_secs(r["age_s"])}</td><td>{fmt_time(r["updated_ms"])}</td>'
        f'<td>{e(r["consumer_group"] or "")}</td><td>{e(r["kind"] or "")}</td></tr>'
        for r in data["incidents"]) or '<tr><td colspan="7">none</td></tr>'
    which = f" in state <code>{e(data['state'])}</code>" if data["state"] else ""
    cut = (f'<p class="notice">showing the {MAX_LISTED} oldest of {data["total"]}</p>'
           if data["cut"] else "")
    body = (f"<h1>Incidents</h1>{search_form()}"
            "<p>Open incidents of the partitions this worker holds (with several workers, "
            "each shows its own); an incident of another worker's partition is still found "
            "by the search, from its lifecycle events. JSON: "
            '<a href="/api/incidents">/api/incidents</a>.</p>'
            '<h2>By state</h2><table id="by-state"><thead><tr><th>state</th>'
            '<th class="num">open</th><th class="num">oldest (s since its last change)</th>'
            f"</tr></thead><tbody>{states}</tbody></table>"
            f"<h2>Open incidents{which}, oldest first</h2>{cut}"
            '<table id="incidents"><thead><tr><th>incident</th><th>state</th>'
            '<th class="num">attempts</th><th class="num">age (s)</th><th>last change (UTC)'
            "</th><th>group</th><th>kind</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
    return layout("Incidents", body, current="/incidents", request=request)


def detail_page(request: Any, data: dict[str, Any]) -> str:
    incident_id = data["incident_id"]
    inc = data["incident"]
    history: dict[str, Any] = data["history"]
    events = "".join(
        f'<tr class="event" data-event-type="{e(ev["event_type"])}">'
        f'<td class="num">{i}</td><td>{fmt_time(ev["occurred_at"])}</td>'
        f'<td class="event-type">{e(ev["event_type"])}</td>'
        f'<td class="num">{e(ev["attempt"] if ev["attempt"] is not None else "")}</td>'
        f'<td class="outcome">{e(ev["outcome"] or "")}</td>'
        f'<td><code>{e(ev["payload_json"] or "")}</code></td>'
        f'<td class="num">{ev["partition"]}:{ev["offset"]}</td></tr>'
        for i, ev in enumerate(history["events"], 1)) \
        or '<tr><td colspan="7">no lifecycle event found</td></tr>'
    cut = (f'<p class="notice" id="history-cut">the read was cut short ({e(history["cut"])}): '
           "events after the last one shown may be missing</p>" if history["cut"] else "")
    if inc is None:
        state = ('<p class="notice" id="not-held">This worker does not hold the incident\'s '
                 "partition: its state is in another worker's table. The lifecycle events "
                 "below were read from the events topic.</p>")
    else:
        d = inc["deadlines"]
        c = inc["classification"] or {}
        steps = "".join(f"<li>{fmt_time(s['at_ms'])} {e(s['step'])}</li>"
                        for s in inc["history"])
        rows = [("state", f'<span id="incident-state">{e(inc["state"])}</span>'),
                ("attempts", f'<span id="incident-attempts">{inc["attempts"]}</span> '
                             f'(cycle {inc["cycle"]}, {inc["reports"]} reports)'),
                ("first failure", fmt_time(inc["first_failure_ms"] or None)),
                ("last failure", fmt_time(inc["last_failure_ms"] or None)),
                ("last change", fmt_time(inc["updated_ms"] or None)),
                ("classification", e("/".join(str(c.get(k, "")) for k in
                                              ("severity", "category", "type",
                                               "recoverability")) if c else "-")),
                ("kind", e(inc["kind"] or "-")), ("group", e(inc["consumer_group"] or "-")),
                ("dispatch target", e(inc["dispatch_target"] or "-")),
                ("next retry due", fmt_time(d["retry_due_ms"])),
                ("watchdog deadline", f'<span id="watchdog-deadline">'
                                      f'{fmt_time(d["watchdog_deadline_ms"])}</span>'
                                      + (f' ({e(d["watchdog_action"])})'
                                         if d["watchdog_action"] else "")),
                ("held at most until", fmt_time(d["held_limit_ms"]))]
        table = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
        resolve = ""
        if may_operate(request) and not inc["terminal"]:
            resolve = (f'<form method="post" action="{e(incident_link(incident_id))}'
                       f'/acknowledge">{csrf_field(request)}<button type="submit" '
                       'id="acknowledge">Resolve (acknowledge)</button> sends the ack command '
                       "a service sends after a successful redelivery: the incident completes"
                       "</form>")
        state = (f'<table id="incident">{table}</table><h2>Steps kept with the incident</h2>'
                 f"<ul>{steps}</ul>{resolve}")
    body = (f'<h1>Incident <code id="incident-id">{e(incident_id)}</code></h1>'
            f'{search_form(incident_id)}<p><a href="/incidents">open incidents</a> · JSON: '
            f'<a href="/api{e(incident_link(incident_id))}">/api{e(incident_link(incident_id))}'
            f"</a></p>{state}"
            f'<h2>Lifecycle events ({len(history["events"])}, in order)</h2>'
            f'<p>Read from the events topic since {fmt_time(history["since_ms"])}: '
            f'{history["scanned"]} records.</p>{cut}'
            '<table id="events"><thead><tr><th class="num">#</th><th>time (UTC)</th>'
            '<th>event</th><th class="num">attempt</th><th>outcome</th><th>payload</th>'
            f'<th class="num">partition:offset</th></tr></thead><tbody>{events}</tbody>'
            "</table>")
    return layout(f"Incident {incident_id}", body, current="/incidents", request=request)


# ---- routes ---------------------------------------------------------------------------------

def install(app: faust.App, settings: Settings, pipeline: Pipeline,
            incidents: IndexedIncidents) -> None:
    topics = pipeline.services.topics
    codec = pipeline.services.codec

    def decode(value: bytes) -> dict[str, Any]:
        return codec.decode(value, lifecycle.SUBJECT)

    def plain(view: View, message: str, status: int, json: bool) -> Any:
        if json:
            return view.json({"error": message}, status=status)
        return view.text(message + "\n", status=status)

    def held(incident_id: str) -> Incident | None:
        incident = Incident.from_json(incidents.get(incident_id), incident_id)
        return None if incident.unknown else incident

    async def listing(view: View, request: Any, json: bool) -> Any:
        query = request.query
        if "q" in query:
            try:
                found = parse_incident_id(query.get("q"))
            except BadRequest as exc:
                return plain(view, str(exc), 400, json)
            raise aioweb.HTTPSeeOther(("/api" if json else "") + incident_link(found))
        state = query.get("state") or None
        data = open_incidents(incidents.open_items(), now_ms(), state=state)
        return view.json(data) if json else view.html(list_page(request, data))

    async def one(view: View, request: Any, raw_id: str, json: bool) -> Any:
        try:
            incident_id = parse_incident_id(raw_id)
        except BadRequest as exc:
            return plain(view, str(exc), 400, json)
        incident = held(incident_id)
        since = since_of(incident, now_ms())

        def read() -> History:
            consumer = open_reader(settings)
            try:
                return read_history(consumer, topics.events, incident_id, since, decode)
            finally:
                consumer.close()

        try:
            history = await asyncio.wait_for(asyncio.to_thread(read), REQUEST_TIMEOUT_S)
        except TimeoutError:
            return plain(view, f"the broker did not answer within {REQUEST_TIMEOUT_S:g} s",
                         504, json)
        if incident is None and not history.events:
            return plain(view, f"no incident {incident_id} in this worker's table, nor "
                               "lifecycle events of it in the last "
                               f"{LOOKBACK_MS // 3_600_000} h", 404, json)
        data = {"incident_id": incident_id,
                "incident": incident_data(incident, pipeline) if incident else None,
                "history": {"since_ms": since, "scanned": history.scanned,
                            "cut": history.cut, "events": history.events}}
        return view.json(data) if json else view.html(detail_page(request, data))

    async def acknowledge(view: View, request: Any, raw_id: str, json: bool) -> Any:
        try:
            incident_id = parse_incident_id(raw_id)
        except BadRequest as exc:
            return plain(view, str(exc), 400, json)
        incident = held(incident_id)
        if incident is None:
            return plain(view, f"no incident {incident_id} in this worker's table", 404, json)
        if incident.terminal:
            return plain(view, f"incident {incident_id} is {incident.state} already", 409, json)
        # The command exactly as a service's acknowledgement (FailureReporter.acknowledge).
        await app.producer.send_and_wait(topics.commands, incident_id.encode(), b"", None,
                                         None, [(h.COMMAND, ACK.encode())])
        if json:
            return view.json({"incident_id": incident_id, "command": ACK}, status=202)
        raise aioweb.HTTPSeeOther(incident_link(incident_id))

    class Listing(View):
        async def get(self, request: Any) -> Any:
            return await listing(self, request, False)

    class ListingApi(View):
        async def get(self, request: Any) -> Any:
            return await listing(self, request, True)

    class One(View):
        async def get(self, request: Any, incident_id: str) -> Any:
            return await one(self, request, incident_id, False)

    class OneApi(View):
        async def get(self, request: Any, incident_id: str) -> Any:
            return await one(self, request, incident_id, True)

    class Acknowledge(View):
        async def post(self, request: Any, incident_id: str) -> Any:
            return await acknowledge(self, request, incident_id, False)

    class AcknowledgeApi(View):
        async def post(self, request: Any, incident_id: str) -> Any:
            return await acknowledge(self, request, incident_id, True)

    app.page("/incidents", name="recovery-incidents")(Listing)
    app.page("/api/incidents", name="recovery-incidents-api")(ListingApi)
    app.page("/incidents/{incident_id}", name="recovery-incident")(One)
    app.page("/api/incidents/{incident_id}", name="recovery-incident-api")(OneApi)
    app.page("/incidents/{incident_id}/acknowledge",
             name="recovery-incident-ack")(Acknowledge)
    app.page("/api/incidents/{incident_id}/acknowledge",
             name="recovery-incident-ack-api")(AcknowledgeApi)
