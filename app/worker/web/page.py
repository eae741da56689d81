"""The overview page, rendered on the server from the overview dictionary; a small script
(static/lag-chart.js) draws the lag chart and refreshes the page's content in place."""

from __future__ import annotations

import time
from html import escape
from typing import Any


def fmt_count(value: int | None) -> str:
    return "-" if value is None else str(value)


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def e(value: Any) -> str:
    return escape(str(value), quote=True)


NAV = (("/", "Overview"), ("/dead-letters", "Dead letters"), ("/poison", "Poison"),
       ("/incidents", "Incidents"))
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
nav.site { margin-bottom: 1rem; display: flex; gap: 1.2rem; border-bottom: 1px solid #ddd;
  padding-bottom: .5rem; }
nav.site a { text-decoration: none; color: #0969da; }
nav.site a.current { font-weight: bold; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { padding: .2rem .7rem; border-bottom: 1px solid #ddd; text-align: left;
  vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: .6rem; overflow: auto; max-height: 30rem; }
#headers pre { margin: 0; padding: .1rem .3rem; max-height: 10rem; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .8rem; }
.error { background: #ffebe9; border: 1px solid #cf222e; padding: .4rem .8rem; }
form.filters label, form.replay label { margin-right: .8rem; }
"""


def nav(current: str) -> str:
    """The links every page shares."""
    links = "".join(f'<a href="{href}"{" class=current" if href == current else ""}>'
                    f"{e(label)}</a>" for href, label in NAV)
    return f'<nav class="site">{links}</nav>'


def csrf_field(request: Any) -> str:
    """The hidden field every POST form carries (app/worker/web/access.py checks it)."""
    token = request.get("csrf_token", "") if request is not None else ""
    return f'<input type="hidden" name="csrf_token" value="{e(token)}">'


def may_operate(request: Any) -> bool:
    """Replay buttons are for operators; a viewer sees none."""
    return (request.get("role", "operator") if request is not None else "operator") != "viewer"


def layout(title: str, body: str, *, current: str, request: Any = None,
           scripts: tuple[str, ...] = ()) -> str:
    token = request.get("csrf_token", "") if request is not None else ""
    tags = "".join(f'<script src="{e(src)}"></script>' for src in scripts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="csrf-token" content="{e(token)}">
<title>{e(title)} - Kafka recovery</title>
<style>{STYLE}</style></head>
<body>
{nav(current)}
<main>
{body}
</main>
{tags}
</body></html>
"""


def group_rows(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return '<tr><td colspan="5">no consumer group with committed offsets yet</td></tr>'
    rows = []
    for g in groups:
        name = e(g["group"])
        rows.append(
            f'<tr class="group" data-group="{name}">'
            f'<td class="name">{name}</td><td class="state">{e(g["state"])}</td>'
            f'<td class="status status-{e(g["status"])}">{e(g["status"])}</td>'
            f'<td class="total-lag num">{fmt_count(g["total_lag"])}</td>'
            f'<td class="time-lag num">{fmt_seconds(g["max_time_lag_s"])}</td></tr>')
        for p in g["partitions"]:
            rows.append(
                f'<tr class="partition" data-group="{name}" data-topic="{e(p["topic"])}" '
                f'data-partition="{p["partition"]}">'
                f'<td class="name">&nbsp;&nbsp;{e(p["topic"])}[{p["partition"]}]</td>'
                f'<td class="offsets num"><span class="committed">{p["committed"]}</span> / '
                f'<span class="end">{fmt_count(p["end"])}</span></td>'
                f'<td class="status status-{e(p["status"])}">{e(p["status"])}</td>'
                f'<td class="lag num">{fmt_count(p["lag"])}</td>'
                f'<td class="time-lag num">{fmt_seconds(p["time_lag_s"])}</td></tr>')
    return "\n".join(rows)


def event_rows(events: list[dict[str, Any]]) -> str:
    if not events:
        return '<tr><td colspan="5">no lifecycle event emitted by this worker yet</td></tr>'
    return "\n".join(
        f'<tr class="event" data-incident="{e(ev["incident_id"])}">'
        f'<td>{fmt_time(ev.get("occurred_at"))}</td>'
        f'<td class="event-type">{e(ev["event_type"])}</td>'
        f'<td class="incident">{e(ev["incident_id"])}</td>'
        f'<td class="num">{e(ev.get("attempt", ""))}</td>'
        f'<td class="outcome">{e(ev.get("outcome") or "")}</td></tr>'
        for ev in events)


def render(data: dict[str, Any], *, refresh_s: float) -> str:
    c = data["counters"]
    errors = "".join(f"<li>{e(err)}</li>" for err in data["errors"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Kafka recovery</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ padding: .2rem .7rem; border-bottom: 1px solid #ddd; text-align: left; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.status-OK {{ color: #1a7f37; }} .status-WARN {{ color: #9a6700; }}
.status-ERR, .status-STOP, .status-STALL {{ color: #cf222e; font-weight: bold; }}
.status-REWIND {{ color: #8250df; font-weight: bold; }}
tr.partition td {{ color: #555; font-size: .9em; }}
.cards {{ display: flex; gap: 1rem; margin-bottom: 1.5rem; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }}
.card .value {{ font-size: 1.6rem; }}
#lag-chart {{ border: 1px solid #ddd; background: #fcfcfc; }}
nav.site {{ margin-bottom: 1rem; display: flex; gap: 1.2rem; border-bottom: 1px solid #ddd;
  padding-bottom: .5rem; }}
nav.site a {{ text-decoration: none; color: #0969da; }}
nav.site a.current {{ font-weight: bold; color: #222; }}
</style></head>
<body data-refresh-s="{refresh_s}">
{nav("/")}
<main>
<h1>Kafka recovery</h1>
<p>Lag snapshot at <span id="taken-at">{fmt_time(data["taken_at_ms"])}</span>
(every {refresh_s:g} s). Metrics: <a href="/metrics">/metrics</a>,
data: <a href="/api/overview">/api/overview</a>.</p>
<ul class="errors">{errors}</ul>
<div class="cards">
<div class="card"><div>Dead letters</div>
<div class="value" id="dead-letters">{fmt_count(data["dead_letters"])}</div>
<div><small>records in <a href="/dead-letters">{e(data["dlq_topic"])}</a></small></div></div>
<div class="card"><div>Poison</div>
<div class="value" id="poison">{fmt_count(data["poison"])}</div>
<div><small>records in <a href="/poison">{e(data["poison_topic"])}</a></small></div></div>
<div class="card"><div>Retries scheduled</div>
<div class="value" id="retries-scheduled">{c["retries_scheduled"]}</div></div>
<div class="card"><div>Recoveries completed</div>
<div class="value" id="recoveries-completed">{c["recoveries_completed"]}</div></div>
<div class="card"><div>Escalations</div>
<div class="value" id="escalations">{c["escalations"]}</div></div>
</div>
<h2>Consumer groups</h2>
<table id="groups"><thead><tr><th>group / partition</th><th>state / committed, end</th>
<th>status</th><th class="num">lag (messages)</th><th class="num">time lag (s)</th></tr></thead>
<tbody>
{group_rows(data["groups"])}
</tbody></table>
<h2>Lag over time</h2>
<svg id="lag-chart" width="900" height="260" role="img" aria-label="total lag per group"></svg>
<div id="lag-legend"></div>
<h2>Recent lifecycle events</h2>
<table id="events"><thead><tr><th>time (UTC)</th><th>event</th><th>incident</th>
<th class="num">attempt</th><th>outcome</th></tr></thead>
<tbody>
{event_rows(data["recent_events"])}
</tbody></table>
</main>
<script src="/static/lag-chart.js"></script>
</body></html>
"""
