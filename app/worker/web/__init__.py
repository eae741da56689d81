"""The worker's web pages: the overview (/), its data (/api/overview), the chart script, the
Prometheus metrics (/metrics), and the console's dead-letter and poison pages with replays
started from the page (app/worker/web/console.py), on Faust's web server (RECOVERY_WEB_PORT)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust

from app.worker import consumer_state, metrics, task_dump
from app.worker.lag_monitor import LagMonitor
from app.worker.web import console
from app.worker.web.overview import overview
from app.worker.web.page import render

STATIC = Path(__file__).resolve().parent / "static"


def install(app: faust.App, monitor: LagMonitor) -> None:
    settings = monitor.settings
    dlq, poison = settings.topic("recovery.dlq"), settings.topic("recovery.poison")
    chart_js = (STATIC / "lag-chart.js").read_text()
    replays = console.install(app, settings, STATIC)

    @app.on_before_shutdown.connect
    async def stop_replays(app: faust.App, **_: Any) -> None:
        # A replay started from the page stops at its next batch and stores its progress
        # (resumable by name); bounded, so a stuck one cannot hold the shutdown.
        await asyncio.to_thread(replays.stop_all, 5.0)

    def data() -> dict[str, Any]:
        return overview(monitor.view, monitor.tracker.history, dlq_topic=dlq,
                        poison_topic=poison, recent=metrics.RECENT_EVENTS)

    @app.page("/", name="recovery-overview")
    async def index(self: Any, request: Any) -> Any:
        return self.html(render(data(), refresh_s=settings.lag_interval_s or 10.0))

    @app.page("/api/overview", name="recovery-overview-api")
    async def api_overview(self: Any, request: Any) -> Any:
        return self.json(data())

    @app.page("/static/lag-chart.js", name="recovery-lag-chart")
    async def lag_chart(self: Any, request: Any) -> Any:
        return self.text(chart_js, content_type="application/javascript")

    @app.page("/debug/consumer-tasks", name="recovery-consumer-tasks")
    async def consumer_tasks(self: Any, request: Any) -> Any:
        # Where a worker that joined its group and did nothing is stuck (app/task_dump.py).
        return self.text(task_dump.consumer_tasks_text(app))

    @app.page("/debug/consumer-state", name="recovery-consumer-state")
    async def consumer_state_page(self: Any, request: Any) -> Any:
        # Why a worker that fetches processes nothing (app/consumer_state.py).
        return self.json(consumer_state.consumer_state(app))

    @app.page("/metrics", name="recovery-metrics")
    async def prometheus(self: Any, request: Any) -> Any:
        return self.bytes(metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})
