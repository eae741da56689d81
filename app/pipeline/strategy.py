"""Where scenario strategies plug into the pipeline: the typed port they use, the hooks they
may implement, and the dispatch that hands each strategy only what it declared.

The generic pipeline (classify, decide, retry through tiers, dead-letter, poison) runs for
every failure event. A scenario strategy (app/scenarios/*) adds what the source document's
handler for its failure kinds does beyond that. A strategy declares the failure `kinds` it
serves; the hooks about one failure event are called only for those kinds:

- `takes_over(event)`: the strategy owns the event from the start (no generic retry
  decision is made): e.g. a network partition report, a cache inconsistency; then
  `handle(ctx)` does the work.
- `after_decision(ctx)`: called once the generic decision is made and recorded, before its
  records are sent; for Escalate/AlternativeRoute decisions, returning True means the
  strategy handled the terminal step itself (alternative server, cached result, fallback,
  ...), so the generic `recovery/escalated` event is not emitted. Runs again for a report
  redelivered after a crash: use deterministic step ids (`lifecycle.step_id`).
- `after_apply(ctx)`: called once the decision's records and events are sent (a step that
  must follow them: Scenario 4 restarts a consumer after its record is poisoned).
- `reported_fields(event)`: fields the strategy adds to the payload of the event named after
  the failure as reported (`communication/mcp_connection_lost`, ...), as the source has them.
- `on_completed(services, incident)`: an incident of one of its kinds completed (its
  redelivery was acknowledged).

Two hooks are not about one failure kind; a strategy gets them only if it implements them:

- `on_watch_outcome(services, group, before, outcome)`: a consumer-health watch check
  emitted an event (app/pipeline/health.py); `before` is the consumer's health before it.
- `on_event(services, event)`: every lifecycle event the worker emits (as a dict), in
  process; must be cheap (coordinated recovery watches failures and outcomes with it).

Each scenario module exposes `install(app, services) -> Strategy`, which may also register
its own Faust agents and tables, and is listed in SCENARIO_MODULES.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.avro.codec import AvroCodec
from app.contracts.clock import Clock
from app.contracts.failure_event import FailureEvent
from app.contracts.records import OutRecord, RawRecord
from app.pipeline import decide as d
from app.pipeline.classify import Classification
from app.pipeline.health import ConsumerHealth, WatchOutcome, WatchSettings
from app.pipeline.topology import TopicNames
from app.policy.routing import ScenarioPolicies
from app.policy.rules import Policies
from app.policy.state import StatePolicies
from app.settings import Settings

log = logging.getLogger(__name__)

# One line per scenario module; each must define `install(app, services) -> Strategy`.
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

# A table as the pipeline sees it: a mapping it reads and writes (Faust's tables are ones).
Table = MutableMapping[str, Any]


@dataclass
class StrategyServices:
    """What a strategy may use: configuration, the codec and policies (read once), topic
    names, the clock, and the outbox's two ways out (`send`, `emit`). The worker's
    `Services` (app/pipeline/services.py) extends it with what only the stages use."""

    settings: Settings
    codec: AvroCodec
    policies: Policies
    scenario_policies: ScenarioPolicies
    state_policies: StatePolicies
    topics: TopicNames
    watch: WatchSettings
    clock: Clock

    async def send(self, record: OutRecord) -> None:
        raise NotImplementedError

    async def emit(self, event_type: str, incident_id: str, *, step_id: str,
                   **fields: Any) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class StrategyContext:
    services: StrategyServices
    event: FailureEvent  # the decoded failure event
    record: RawRecord  # the record it came in
    incident: d.Incident
    classification: Classification
    decision: d.Decision | None  # None when the strategy took the event over
    incidents: Table  # the incidents table (writable inside the incident agent)


class Strategy(Protocol):
    name: str
    kinds: frozenset[str]

    def takes_over(self, event: FailureEvent) -> bool: ...

    async def handle(self, ctx: StrategyContext) -> None: ...

    async def after_decision(self, ctx: StrategyContext) -> bool: ...

    def reported_fields(self, event: FailureEvent) -> dict[str, Any]: ...

    async def after_apply(self, ctx: StrategyContext) -> None: ...

    async def on_completed(self, services: StrategyServices, incident: d.Incident) -> None: ...

    async def on_watch_outcome(self, services: StrategyServices, group: str,
                               before: ConsumerHealth, outcome: WatchOutcome) -> None: ...

    async def on_event(self, services: StrategyServices, event: dict[str, Any]) -> None: ...


class BaseStrategy:
    """Defaults: claims nothing, adds nothing after the generic decision."""

    name = "base"
    kinds: frozenset[str] = frozenset()

    def takes_over(self, event: FailureEvent) -> bool:
        return False

    async def handle(self, ctx: StrategyContext) -> None:
        return None

    async def after_decision(self, ctx: StrategyContext) -> bool:
        return False

    def reported_fields(self, event: FailureEvent) -> dict[str, Any]:
        return {}

    async def after_apply(self, ctx: StrategyContext) -> None:
        return None

    async def on_completed(self, services: StrategyServices, incident: d.Incident) -> None:
        return None

    async def on_watch_outcome(self, services: StrategyServices, group: str,
                               before: ConsumerHealth, outcome: WatchOutcome) -> None:
        return None

    async def on_event(self, services: StrategyServices, event: dict[str, Any]) -> None:
        return None


def _implements(strategy: Strategy, hook: str) -> bool:
    """Whether the strategy has its own `hook` (not BaseStrategy's do-nothing default)."""
    own = getattr(type(strategy), hook, None)
    return own is not None and own is not getattr(BaseStrategy, hook)


class Strategies:
    """The installed strategies, indexed by what each declared: its failure kinds, and the
    kind-free hooks it implements. Each hook reaches only the strategies that asked for it."""

    def __init__(self, installed: list[Strategy]):
        self.installed = list(installed)
        self._by_kind: dict[str, list[Strategy]] = {}
        for strategy in self.installed:
            for kind in strategy.kinds:
                self._by_kind.setdefault(kind, []).append(strategy)
        self._completing = [s for s in self.installed if _implements(s, "on_completed")]
        self._watching = [s for s in self.installed if _implements(s, "on_watch_outcome")]
        self._observing = [s for s in self.installed if _implements(s, "on_event")]

    def for_kind(self, kind: str | None) -> list[Strategy]:
        return self._by_kind.get(kind or "", [])

    def owner_of(self, event: FailureEvent) -> Strategy | None:
        return next((s for s in self.for_kind(event.kind) if s.takes_over(event)), None)

    def reported_fields(self, event: FailureEvent) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for strategy in self.for_kind(event.kind):
            fields.update(strategy.reported_fields(event))
        return fields

    async def after_decision(self, ctx: StrategyContext) -> bool:
        handled = False
        for strategy in self.for_kind(ctx.event.kind):
            handled = await strategy.after_decision(ctx) or handled
        return handled

    async def after_apply(self, ctx: StrategyContext) -> None:
        for strategy in self.for_kind(ctx.event.kind):
            await strategy.after_apply(ctx)

    async def on_completed(self, services: StrategyServices, incident: d.Incident) -> None:
        # An incident recorded before incidents kept their kind goes to every strategy
        # that handles completions (each checks the incident itself, as it always did).
        chosen = self.for_kind(incident.kind) if incident.kind else self._completing
        for strategy in chosen:
            await strategy.on_completed(services, incident)

    async def on_watch_outcome(self, services: StrategyServices, group: str,
                               before: ConsumerHealth, outcome: WatchOutcome) -> None:
        for strategy in self._watching:
            await strategy.on_watch_outcome(services, group, before, outcome)

    async def on_event(self, services: StrategyServices, event: dict[str, Any]) -> None:
        for strategy in self._observing:
            await strategy.on_event(services, event)


Installer = Callable[[Any, StrategyServices], Strategy]


def install_all(app: Any, services: StrategyServices,
                modules: tuple[str, ...] = SCENARIO_MODULES) -> Strategies:
    installed: list[Strategy] = []
    for name in modules:
        module = importlib.import_module(name)
        installer: Installer = module.install
        installed.append(installer(app, services))
    return Strategies(installed)

