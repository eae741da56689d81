"""The console's dead-letter and poison pages, the record view and replays started from the
page, on the worker's web server. Every Kafka call runs in a thread (asyncio.to_thread)
under a timeout, so Faust's event loop never waits on the broker; GETs change nothing, every
change is a POST carrying the CSRF field (app/worker/web/access.py checks it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import faust
from aiohttp import web as aioweb
from faust.web import View

from app.contracts import headers as h
from app.contracts import topics as t
from app.replay.targets import INCIDENT, ORIGINAL, REDELIVERY
from app.settings import Settings
from app.worker.web import dead_letters as dl
from app.worker.web import replays as rp
from app.worker.web.page import csrf_field, e, fmt_time, layout, may_operate
from app.worker.web.records import record_data, render_value

REQUEST_TIMEOUT_S = 30.0
STATIC_JS = "/static/console.js"
T = TypeVar("T")

SOURCES = {"dead-letters": ("Dead letters", t.DLQ), "poison": ("Poison", t.POISON)}


class Timeout(Exception):
    pass


async def blocking(fn: Callable[..., T], *args: Any, timeout: float = REQUEST_TIMEOUT_S) -> T:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except TimeoutError:
        raise Timeout(f"the broker did not answer within {timeout:.0f} s") from None


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(text: str | None, limit: int = 80) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def key_text(key: bytes | None) -> str:
    """A key on one line: its text, else its bytes in hex."""
    if key is None:
        return "(null)"
    r = render_value(key, limit=256)
    if r.kind == "empty":
        return "(empty)"
    return r.text if r.kind in ("text", "json") else "0x" + key[:64].hex()


# ---- data (the JSON twins) ------------------------------------------------------------------

def list_data(source: str, topic: str, query: dl.Query, page: dl.Page) -> dict[str, Any]:
    return {
        "source": source, "topic": topic, "order": query.order, "limit": query.limit,
        "filters": query.filters, "partitions": len(page.partitions), "scanned": page.scanned,
        "stopped_early": page.stopped_early,
        "next_cursor": dl.encode_cursor(page.next_cursor) if page.next_cursor else None,
        "records": [{
            "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
            "key": key_text(r.key), "original_topic": r.header(h.ORIGINAL_TOPIC),
            "group": r.header(h.CONSUMER_GROUP), "error_type": r.header(h.ERROR_TYPE),
            "reason": r.header(h.REASON), "incident_id": r.header(h.INCIDENT_ID),
            "url": f"/{source}/{r.partition}/{r.offset}",
        } for r in page.records],
    }


def preview_data(request: rp.ReplayRequest, preview: rp.Preview) -> dict[str, Any]:
    return {"name": request.name, "description": request.describe(),
            "target": request.target.describe(), "rate": request.rate,
            "scanned": preview.scanned, "matched": preview.matched,
            "would_send": preview.would_send, "unroutable": preview.unroutable,
            "missing": preview.missing, "rows": preview.rows, "complete": preview.complete,
            "sample": [{"partition": r.partition, "offset": r.offset, "key": key_text(r.key),
                        "incident_id": r.header(h.INCIDENT_ID)} for r in preview.sample]}


# ---- HTML -----------------------------------------------------------------------------------

def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def _filter_fields(filters: dict[str, list[str]]) -> str:
    return "".join(_hidden(name, v) for name, values in filters.items() for v in values)


def _target_select(source: str) -> str:
    options = ([(INCIDENT, "through the worker (completes the incident)")]
               if source == "dead-letters" else [])
    options += [(REDELIVERY, "the consumer's redelivery topic"),
                (ORIGINAL, "the original topic")]
    opts = "".join(f'<option value="{v}">{e(label)}</option>' for v, label in options)
    return (f'<label>to <select name="to" id="replay-to">{opts}</select></label>'
            '<label>or topic <input name="to_topic" size="18"></label>'
            f'<label>rate <input name="rate" id="replay-rate" size="6" '
            f'value="{rp.DEFAULT_RATE:g}"> records/s</label>'
            '<label>name <input name="name" size="18" placeholder="(derived)"></label>')


def filter_form(source: str, query: dl.Query) -> str:
    f = query.filters

    def field(name: str, label: str, size: int = 14, hint: str = "") -> str:
        value = f[name][0] if f[name] else ""
        return (f'<label>{e(label)} <input name="{name}" id="filter-{name}" size="{size}" '
                f'value="{e(value)}" placeholder="{e(hint)}"></label>')

    order = "".join(f'<option value="{o}"{" selected" if o == query.order else ""}>{o} first'
                    "</option>" for o in (dl.NEWEST, dl.OLDEST))
    return (f'<form class="filters" method="get" action="/{source}">'
            + field("topic", "original topic") + field("group", "group")
            + field("error_type", "error type") + field("key", "key", 10)
            + field("since", "since", 20, "-2h or 2024-05-01T12:00Z")
            + field("until", "until", 20, "now")
            + f'<label>order <select name="order">{order}</select></label>'
            f'<label>per page <input name="limit" size="3" value="{query.limit}"></label>'
            '<button type="submit" id="filter-apply">Filter</button></form>')


def list_page(request: Any, source: str, topic: str, query: dl.Query, page: dl.Page) -> str:
    title = SOURCES[source][0]
    rows = "\n".join(
        f'<tr class="record" data-partition="{r.partition}" data-offset="{r.offset}">'
        f"<td>{fmt_time(r.timestamp_ms)}</td>"
        f'<td><a class="open" href="/{source}/{r.partition}/{r.offset}">'
        f"{r.partition}:{r.offset}</a></td>"
        f'<td class="key">{e(_text(key_text(r.key), 40))}</td>'
        f'<td class="original-topic">{e(r.header(h.ORIGINAL_TOPIC) or "")}</td>'
        f'<td class="group">{e(r.header(h.CONSUMER_GROUP) or "")}</td>'
        f'<td class="error-type">{e(r.header(h.ERROR_TYPE) or "")}</td>'
        f'<td class="reason">{e(_text(r.header(h.REASON)))}</td></tr>'
        for r in page.records) or '<tr><td colspan="7">no record matches</td></tr>'
    notes = [f"{page.scanned} records read for this page"]
    if page.stopped_early:
        notes.append('<span class="notice" id="stopped-early">stopped early: the page reads at '
                     f"most {dl.MAX_SCAN} records and {dl.MAX_PAGE_S:g} s; the next page goes "
                     "on from here</span>")
    more = ""
    if page.next_cursor:
        params = [(k, v) for k, vs in query.filters.items() for v in vs]
        params += [("order", query.order), ("limit", str(query.limit)),
                   ("cursor", dl.encode_cursor(page.next_cursor))]
        more = f'<p><a id="next-page" href="/{source}?{urlencode(params)}">Next page</a></p>'
    replay = ""
    if may_operate(request):
        replay = (f'<h2>Replay the selection</h2><form class="replay" method="post" '
                  f'action="/replays/preview">{csrf_field(request)}{_hidden("source", source)}'
                  f"{_filter_fields(query.filters)}{_target_select(source)}"
                  '<button type="submit" id="preview-selection">Preview replay</button></form>')
    body = (f"<h1>{e(title)}</h1><p>Records in <code>{e(topic)}</code>, "
            f"{e(query.order)} first.</p>{filter_form(source, query)}"
            f'<p class="page-info">{" · ".join(notes)}</p>'
            '<table id="records"><thead><tr><th>time (UTC)</th><th>partition:offset</th>'
            "<th>key</th><th>original topic</th><th>group</th><th>error type</th>"
            f"<th>reason</th></tr></thead><tbody>{rows}</tbody></table>{more}{replay}")
    return layout(title, body, current=f"/{source}", request=request)


def _pre(kind: str, text: str, element_id: str = "") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    if kind in ("null", "empty"):
        return f'<p{ident} class="value-{kind}">({kind})</p>'
    return f'<pre{ident} class="value-{kind}">{e(text)}</pre>'


def record_page(request: Any, source: str, data: dict[str, Any]) -> str:
    title = f"{SOURCES[source][0]} {data['partition']}:{data['offset']}"
    headers = "\n".join(
        f'<tr class="header"><td class="name">{e(hd["name"])}</td>'
        f'<td class="kind">{e(hd["kind"])}</td><td>{_pre(hd["kind"], hd["text"])}</td></tr>'
        for hd in data["headers"]) or '<tr><td colspan="3">no headers</td></tr>'
    incident = (f'<a id="incident-link" href="{e(data["incident_url"])}">'
                f'{e(data["incident_id"])}</a> (its lifecycle history)'
                if data["incident_id"] else "none named")
    original = data["original"]
    replay = ""
    if may_operate(request):
        replay = (f'<h2>Replay this record</h2><form class="replay" method="post" '
                  f'action="/replays/preview">{csrf_field(request)}{_hidden("source", source)}'
                  f'{_hidden("record", data["replay_id"])}{_target_select(source)}'
                  '<button type="submit" id="preview-record">Preview replay</button></form>')
    value = data["value"]
    body = (f"<h1>{e(title)}</h1>"
            f'<p><a href="/{source}">back to the list</a></p>'
            f'<table id="record-meta">'
            f'<tr><th>topic</th><td>{e(data["topic"])}</td></tr>'
            f'<tr><th>partition:offset</th><td>{data["partition"]}:{data["offset"]}</td></tr>'
            f'<tr><th>time (UTC)</th><td>{fmt_time(data["timestamp_ms"])}</td></tr>'
            f'<tr><th>reason</th><td id="reason">{e(data["reason"] or "-")}</td></tr>'
            f'<tr><th>error</th><td>{e(data["error_type"] or "-")}: '
            f'{e(data["error_message"] or "")}</td></tr>'
            f'<tr><th>original</th><td>{e(original["topic"] or "-")}'
            f'[{e(original["partition"] or "-")}]@{e(original["offset"] or "-")}</td></tr>'
            f'<tr><th>group</th><td>{e(data["group"] or "-")}</td></tr>'
            f'<tr><th>incident</th><td>{incident}</td></tr></table>'
            f'<h2>Key <small>({e(data["key"]["kind"])}, {data["key"]["size"]} bytes)</small></h2>'
            f'{_pre(data["key"]["kind"], data["key"]["text"], "record-key")}'
            f'<h2>Value <small>(<span id="value-kind">{e(value["kind"])}</span>, '
            f'{value["size"]} bytes{", cut" if value["truncated"] else ""})</small></h2>'
            f'{_pre(value["kind"], value["text"], "record-value")}'
            f'<h2>Headers ({len(data["headers"])})</h2><table id="headers"><thead><tr>'
            f"<th>name</th><th>shown as</th><th>value</th></tr></thead><tbody>{headers}"
            f"</tbody></table>{replay}")
    return layout(title, body, current=f"/{source}", request=request)


def preview_page(request: Any, replay: rp.ReplayRequest, preview: rp.Preview,
                 form: Any) -> str:
    rows = "\n".join(
        f'<tr><td>{e(r["original_topic"])}</td><td>{e(r["group"])}</td>'
        f'<td>{e(r["error_type"])}</td><td>{e(r["target"])}'
        f'{" (missing: not sent)" if r["missing"] else ""}</td>'
        f'<td class="num">{r["records"]}</td></tr>' for r in preview.rows) \
        or '<tr><td colspan="5">nothing matches</td></tr>'
    sample = "\n".join(
        f'<tr class="sample"><td><a href="/{replay.source}/{r.partition}/{r.offset}">'
        f"{r.partition}:{r.offset}</a></td><td>{e(_text(key_text(r.key), 40))}</td>"
        f'<td>{e(r.header(h.INCIDENT_ID) or "")}</td></tr>' for r in preview.sample)
    partial = ("" if preview.complete else
               f'<p class="notice">the dry run stopped after {rp.PREVIEW_S:g} s: the counts '
               "cover what it read</p>")
    keep = [(k, v) for k in ("source", "record", "to", "to_topic", "rate", "name", "restart",
                             *dl.FILTERS)
            for v in (form.getall(k, []) if hasattr(form, "getall") else [])
            if isinstance(v, str) and v.strip()]
    keep = [(k, v) for k, v in keep if k != "name"] + [("name", replay.name)]
    hidden = "".join(_hidden(k, v) for k, v in keep)
    confirm = ""
    if may_operate(request) and preview.would_send > 0:
        confirm = (f'<form class="replay" method="post" action="/replays">{csrf_field(request)}'
                   f'{hidden}<label><input type="checkbox" name="confirm" value="yes" '
                   f'id="confirm" required> replay {preview.would_send} records to '
                   f"{e(replay.target.describe())} at most {replay.rate:g}/s</label>"
                   '<button type="submit" id="start-replay">Replay</button></form>')
    body = (f"<h1>Replay preview</h1><p>{e(replay.describe())}; name "
            f"<code>{e(replay.name)}</code>. Dry run: nothing sent.</p>{partial}"
            f'<p>Read <span id="preview-scanned">{preview.scanned}</span>, matched '
            f'<span id="preview-matched">{preview.matched}</span>, would send '
            f'<span id="preview-would-send">{preview.would_send}</span>'
            f'{f", {preview.unroutable} unroutable" if preview.unroutable else ""}.</p>'
            '<table id="preview-rows"><thead><tr><th>original topic</th><th>group</th>'
            '<th>error type</th><th>target</th><th class="num">records</th></tr></thead>'
            f"<tbody>{rows}</tbody></table><h2>First records</h2>"
            '<table id="preview-sample"><thead><tr><th>partition:offset</th><th>key</th>'
            f"<th>incident</th></tr></thead><tbody>{sample}</tbody></table>{confirm}")
    return layout("Replay preview", body, current=f"/{replay.source}", request=request)


def progress_page(request: Any, status: dict[str, Any]) -> str:
    name = status["name"]
    stop = ""
    if may_operate(request) and status["running"]:
        stop = (f'<form method="post" action="/replays/{quote(name)}/stop">'
                f'{csrf_field(request)}<button type="submit" id="stop-replay">Stop</button>'
                "</form>")
    fields = [("state", "state"), ("sent", "sent"), ("matched", "matched"),
              ("scanned", "read"), ("total", "to read in all"), ("remaining", "left to read"),
              ("unroutable", "unroutable"), ("not_sent", "not sent (missing topic)"),
              ("rate", "rate limit (records/s)"), ("elapsed_s", "elapsed (s)")]
    rows = "".join(f'<tr><th>{e(label)}</th><td id="replay-{k.replace("_", "-")}">'
                   f'{e(status.get(k) if status.get(k) is not None else "-")}</td></tr>'
                   for k, label in fields)
    error = f'<p class="error" id="replay-error">{e(status["error"])}</p>' \
        if status.get("error") else '<p class="error" id="replay-error" hidden></p>'
    done = ('<p class="notice">already complete: nothing sent again (a new name, or '
            "restart, replays the selection again)</p>" if status.get("already_complete")
            else "")
    body = (f'<h1>Replay <code id="replay-name" data-name="{e(name)}">{e(name)}</code></h1>'
            f'<p id="replay-description">{e(status["description"])}</p>{done}'
            f'<progress id="replay-bar" max="{max(1, status["total"] or 0)}" '
            f'value="{status["scanned"] or 0}"></progress>'
            f'<table id="replay-status">{rows}</table>{error}{stop}'
            f'<p>JSON: <a href="/api/replays/{quote(name)}">/api/replays/{e(name)}</a>. '
            "Progress is kept in the progress topic under this name: the same replay started "
            "again (here, or with <code>recovery replay --name</code> and the same options) "
            "goes on where it stopped.</p>")
    return layout(f"Replay {name}", body, current="/dead-letters", request=request,
                  scripts=(STATIC_JS,))


# ---- routes ---------------------------------------------------------------------------------

def install(app: faust.App, settings: Settings, static_dir: Any) -> rp.Replays:
    replays = rp.Replays(settings)
    console_js = (static_dir / "console.js").read_text()

    def topic_of(source: str) -> str:
        return settings.topic(SOURCES[source][1])

    def plain(view: View, message: str, status: int, json: bool) -> Any:
        if json:
            return view.json({"error": message}, status=status)
        return view.text(message + "\n", status=status)

    async def listing(view: View, request: Any, source: str, json: bool) -> Any:
        try:
            query = dl.parse_query(request.query, now_ms())
        except dl.BadRequest as exc:
            return plain(view, str(exc), 400, json)
        topic = topic_of(source)

        def read() -> dl.Page:
            consumer = dl.open_reader(settings)
            try:
                return dl.read_page(consumer, topic, query)
            finally:
                consumer.close()

        try:
            page = await blocking(read)
        except dl.NoSuchTopic as exc:
            return plain(view, str(exc), 404, json)
        except Timeout as exc:
            return plain(view, str(exc), 504, json)
        if json:
            return view.json(list_data(source, topic, query, page))
        return view.html(list_page(request, source, topic, query, page))

    async def one(view: View, request: Any, source: str, partition: str, offset: str,
                  json: bool) -> Any:
        try:
            p, o = dl.parse_position(partition, offset)
        except dl.BadRequest as exc:
            return plain(view, str(exc), 400, json)
        topic = topic_of(source)

        def read() -> dl.Record | None:
            consumer = dl.open_reader(settings)
            try:
                return dl.read_one(consumer, topic, p, o)
            finally:
                consumer.close()

        try:
            record = await blocking(read)
        except Timeout as exc:
            return plain(view, str(exc), 504, json)
        if record is None:
            return plain(view, f"no record at {topic} partition {p} offset {o}", 404, json)
        data = record_data(record)
        if json:
            return view.json(data)
        return view.html(record_page(request, source, data))

    async def preview(view: View, request: Any, json: bool) -> Any:
        form = await request.post()
        try:
            replay = rp.parse_request(form, settings, now_ms())
            result = await blocking(rp.preview, settings, replay,
                                    timeout=rp.PREVIEW_S + REQUEST_TIMEOUT_S)
        except dl.BadRequest as exc:
            return plain(view, str(exc), 400, json)
        except rp.NotFound as exc:
            return plain(view, str(exc), 404, json)
        except Timeout as exc:
            return plain(view, str(exc), 504, json)
        if json:
            return view.json(preview_data(replay, result))
        return view.html(preview_page(request, replay, result, form))

    async def start(view: View, request: Any, json: bool) -> Any:
        form = await request.post()
        if form.get("confirm") != "yes":
            return plain(view, "not started: confirm the replay (confirm=yes)", 400, json)
        try:
            replay = rp.parse_request(form, settings, now_ms())
            job = await blocking(replays.start, replay)
        except dl.BadRequest as exc:
            return plain(view, str(exc), 400, json)
        except rp.NotFound as exc:
            return plain(view, str(exc), 404, json)
        except rp.Busy as exc:
            return plain(view, str(exc), 409, json)
        except Timeout as exc:
            return plain(view, str(exc), 504, json)
        url = f"/replays/{quote(job.name)}"
        if json:
            return view.json({**job.status(), "url": url}, status=202)
        raise aioweb.HTTPSeeOther(url)

    async def status(view: View, request: Any, name: str, json: bool) -> Any:
        if not rp.NAME.match(name):
            return plain(view, f"bad replay name {name!r}", 400, json)
        try:
            found = await blocking(replays.status, name)
        except Timeout as exc:
            return plain(view, str(exc), 504, json)
        if found is None:
            return plain(view, f"no replay named {name}", 404, json)
        if json:
            return view.json(found)
        return view.html(progress_page(request, found))

    for source in SOURCES:
        def views(source: str = source) -> None:
            class Listing(View):
                async def get(self, request: Any) -> Any:
                    return await listing(self, request, source, False)

            class ListingApi(View):
                async def get(self, request: Any) -> Any:
                    return await listing(self, request, source, True)

            class One(View):
                async def get(self, request: Any, partition: str, offset: str) -> Any:
                    return await one(self, request, source, partition, offset, False)

            class OneApi(View):
                async def get(self, request: Any, partition: str, offset: str) -> Any:
                    return await one(self, request, source, partition, offset, True)

            app.page(f"/{source}", name=f"recovery-{source}")(Listing)
            app.page(f"/api/{source}", name=f"recovery-{source}-api")(ListingApi)
            app.page(f"/{source}/{{partition}}/{{offset}}", name=f"recovery-{source}-one")(One)
            app.page(f"/api/{source}/{{partition}}/{{offset}}",
                     name=f"recovery-{source}-one-api")(OneApi)

        views()

    class Preview(View):
        async def post(self, request: Any) -> Any:
            return await preview(self, request, False)

    class PreviewApi(View):
        async def post(self, request: Any) -> Any:
            return await preview(self, request, True)

    class Start(View):
        async def post(self, request: Any) -> Any:
            return await start(self, request, False)

    class StartApi(View):
        async def post(self, request: Any) -> Any:
            return await start(self, request, True)

    class Status(View):
        async def get(self, request: Any, name: str) -> Any:
            return await status(self, request, name, False)

    class StatusApi(View):
        async def get(self, request: Any, name: str) -> Any:
            return await status(self, request, name, True)

    class Stop(View):
        async def post(self, request: Any, name: str) -> Any:
            replays.stop(name)
            raise aioweb.HTTPSeeOther(f"/replays/{quote(name)}")

    class StopApi(View):
        async def post(self, request: Any, name: str) -> Any:
            return self.json({"name": name, "stopping": replays.stop(name)})

    class ConsoleJs(View):
        async def get(self, request: Any) -> Any:
            return self.text(console_js, content_type="application/javascript")

    app.page("/replays/preview", name="recovery-replay-preview")(Preview)
    app.page("/api/replays/preview", name="recovery-replay-preview-api")(PreviewApi)
    app.page("/replays", name="recovery-replay-start")(Start)
    app.page("/api/replays", name="recovery-replay-start-api")(StartApi)
    app.page("/replays/{name}", name="recovery-replay")(Status)
    app.page("/api/replays/{name}", name="recovery-replay-api")(StatusApi)
    app.page("/replays/{name}/stop", name="recovery-replay-stop")(Stop)
    app.page("/api/replays/{name}/stop", name="recovery-replay-stop-api")(StopApi)
    app.page(STATIC_JS, name="recovery-console-js")(ConsoleJs)
    return replays
