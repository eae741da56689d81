"""Where scenario strategies plug into the worker.

The generic pipeline (classify, decide, retry through tiers, dead-letter, poison) runs for
every failure event. A scenario strategy (app/scenarios/*) adds what the source document's
handler for one failure kind does beyond that:

- `takes_over(event)`: the strategy owns the event from the start (no generic retry
  decision is made): e.g. a network partition report, a cache inconsistency.
- `after_decision(ctx)`: called once the generic decision is made and recorded, before its
  records are sent; for Escalate/AlternativeRoute decisions, returning True means the
  strategy handled the terminal step itself (alternative server, cached result, fallback,
  ...), so the generic `recovery/escalated` event is not emitted. Runs again for a report
  redelivered after a crash: use deterministic step ids (Pipeline.emit's step_id).

- `after_apply(ctx)`: called once the decision's records and events are sent (a step that
  must follow them: Scenario 4 restarts a consumer after its record is poisoned).
- `reported_fields(event)`: fields the strategy adds to the payload of the event named after
  the failure as reported (`communication/mcp_connection_lost`, ...), as the source has them.
- `on_completed(pipeline, incident)`: an incident completed (its redelivery was
  acknowledged).
- `on_watch_outcome(pipeline, group, before, outcome)`: a consumer-health watch check
  emitted an event (app/health.py); `before` is the consumer's health before the check.
- `on_event(pipeline, event)`: every lifecycle event the worker emits (as a dict), in
  process; must be cheap (coordinated recovery watches failures and outcomes with it).

Each scenario module exposes `install(app, pipeline) -> Strategy`, which may also register
its own Faust agents and tables, and is listed in SCENARIO_MODULES.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from app.pipeline import decide as d
from app.pipeline.classify import Classification

log = logging.getLogger(__name__)

# One line per scenario module; each must define `install(app, pipeline) -> Strategy`.
SCENARIO_MODULES: tuple[str, ...] = (
    "app.scenarios.message_too_large",
    "app.scenarios.consumer_crash",
    "app.scenarios.cache_conflicts",
    "app.scenarios.network_partition",
    "app.scenarios.coordinated",
    "app.scenarios.mcp_connection",
    "app.scenarios.tool_discovery",
    "app.scenarios.event_delivery",
)


@dataclass
class StrategyContext:
    pipeline: Any  # app.worker.Pipeline (send, emit, settings, codec, topic names)
    event: dict[str, Any]  # the decoded failure event
    record: Any  # app.intake.RawRecord it came in
    incident: d.Incident
    classification: Classification
    decision: d.Decision | None  # None when the strategy took the event over
    incidents: Any  # the incidents table (writable inside the incident agent)


class Strategy(Protocol):
    name: str

    def takes_over(self, event: dict[str, Any]) -> bool: ...

    async def handle(self, ctx: StrategyContext) -> None: ...

    async def after_decision(self, ctx: StrategyContext) -> bool: ...

    def reported_fields(self, event: dict[str, Any]) -> dict[str, Any]: ...

    async def after_apply(self, ctx: StrategyContext) -> None: ...

    async def on_completed(self, pipeline: Any, incident: d.Incident) -> None: ...

    async def on_watch_outcome(self, pipeline: Any, group: str, before: Any,
                               outcome: Any) -> None: ...

    async def on_event(self, pipeline: Any, event: dict[str, Any]) -> None: ...


class BaseStrategy:
    """Defaults: claims nothing, adds nothing after the generic decision."""

    name = "base"
    kinds: frozenset[str] = frozenset()

    def takes_over(self, event: dict[str, Any]) -> bool:
        return False

    async def handle(self, ctx: StrategyContext) -> None:
        return None

    async def after_decision(self, ctx: StrategyContext) -> bool:
        return False

    def reported_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def after_apply(self, ctx: StrategyContext) -> None:
        return None

    async def on_completed(self, pipeline: Any, incident: d.Incident) -> None:
        return None

    async def on_watch_outcome(self, pipeline: Any, group: str, before: Any,
                               outcome: Any) -> None:
        return None

    async def on_event(self, pipeline: Any, event: dict[str, Any]) -> None:
        return None


def install_all(app: Any, pipeline: Any, modules: tuple[str, ...] = SCENARIO_MODULES
                ) -> list[Strategy]:
    installed: list[Strategy] = []
    for name in modules:
        module = importlib.import_module(name)
        installed.append(module.install(app, pipeline))
    return installed


def owner_of(strategies: list[Strategy], event: dict[str, Any]) -> Strategy | None:
    return next((s for s in strategies if s.takes_over(event)), None)
