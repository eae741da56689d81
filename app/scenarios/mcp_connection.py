"""Scenario 1: MCP connection loss (the source's McpConnectionFailureHandler).

A tool caller (or a tool server's gateway) reports MCP_CONNECTION_LOST with the tool
request it could not get answered as the failed record, the server's request topic as the
dispatch target, and a McpConnectionLost detail (server, tool, arguments, protocol
versions). The generic pipeline classifies it (app/policies/defaults.toml) and emits
`communication/mcp_connection_lost` (this strategy adds the source's serverId,
lastSuccessfulConnection and affectedTools from the tool registry). Then, by the source's
`recoverFromConnectionLoss` switch on the classification type:

- network_timeout (`handleNetworkTimeout`): reconnect-and-retry is the generic retry
  schedule, 1 s / 2 s / 4 s, re-dispatching the request to the same server. When the
  three retries fail, the decision is AlternativeRoute and `tryAlternativeToolRouting`
  runs here: each server offering the same tool (tool registry first, then
  `[scenario.mcp.alternatives]`) is tried in turn (the request re-dispatched to its request
  topic, `communication/tool_rerouted`); the caller reports again if that server fails
  too, and the next one is tried. Then a cached result (table keyed by tool and arguments)
  is returned marked degraded (`using_cached_data`), then a fallback implementation
  (`[scenario.mcp.fallbacks]`: a fixed result, or a simplified service the request is
  routed to; `using_fallback_implementation`), else `recovery/escalated` with the source's
  ToolRoutingFailureError fields: attemptedAlternatives and recommendedAction.
- authentication (`handleAuthenticationFailure`): never retried (`[retry.authentication]`
  attempts 0), escalated by the generic pipeline.
- protocol_version (`handleProtocolMismatch`): not retried (`[retry.protocol_version]`);
  the request goes to a server offering the tool whose protocol version is compatible with
  the client's (the same, or listed in `[scenario.mcp.protocol_compatibility]`), else
  escalated.
- anything else (`handleGenericConnectionFailure`, not shown in the source): the generic
  retries, then the same alternatives as a network timeout (`[retry.connection_failure]`).

Once a request is on its way to another server, any failure reported for it (whatever its
type: the source's loop catches every error) moves on to the next alternative. A result
returned degraded completes the incident; a re-routed request completes when the caller
acknowledges it (FailureReporter.acknowledge). The routing plan of an incident is kept in
the `mcp-routes` table with the step taken for each report, so a report processed again
after a crash sends the same step again, with the same event ids."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.pipeline import decide as d
from app.pipeline import outcomes as routing
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.policy.routing import Fallback, McpPolicy
from app.scenarios.shared import tool_registry as reg
from app.scenarios.shared.incidents import detail_of

log = logging.getLogger(__name__)

KIND = "MCP_CONNECTION_LOST"
DETAIL = "McpConnectionLost"

# Classification types (app/policies/defaults.toml) and the source's handler for each.
NETWORK_TIMEOUT = "network_timeout"
AUTHENTICATION = "authentication"
PROTOCOL_VERSION = "protocol_version"
HANDLERS = {NETWORK_TIMEOUT: "handleNetworkTimeout",
            AUTHENTICATION: "handleAuthenticationFailure",
            PROTOCOL_VERSION: "handleProtocolMismatch"}
GENERIC_HANDLER = "handleGenericConnectionFailure"

MCP_CONNECTION_LOST = "communication/mcp_connection_lost"
TOOL_REROUTED = "communication/tool_rerouted"
DEGRADED_RESULT = "communication/degraded_result_returned"
USING_CACHED_DATA = "using_cached_data"
USING_FALLBACK = "using_fallback_implementation"
ROUTING_ERROR = "ToolRoutingFailureError"
DEGRADED_HEADER = h.PREFIX + "degraded"
ROUTED_SERVER_HEADER = h.PREFIX + "routed.server"

ALTERNATIVES = "alternatives"  # tryAlternativeToolRouting
PROTOCOL = "protocol"  # handleProtocolMismatch
STEPS_KEPT = 10


def handler_for(classification_type: str) -> str:
    """The source's recoverFromConnectionLoss switch."""
    return HANDLERS.get(classification_type, GENERIC_HANDLER)


@dataclass(frozen=True)
class Candidate:
    server_id: str
    topic: str
    protocol_version: str | None = None


@dataclass(frozen=True)
class Plan:
    """Where an incident's tool request has been sent so far, in this incident cycle."""

    cycle: int
    mode: str
    tool: str | None
    arguments_json: str | None
    origin_server: str | None
    client_protocol: str | None = None
    attempted: tuple[str, ...] = ()
    fallback_routed: bool = False
    done: bool = False
    steps: tuple[tuple[str, dict[str, Any]], ...] = ()  # (failure event id, step taken)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["attempted"] = list(self.attempted)
        data["steps"] = [list(s) for s in self.steps]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Plan | None:
        if not data:
            return None
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["attempted"] = tuple(values.get("attempted", ()))
        values["steps"] = tuple((s[0], s[1]) for s in values.get("steps", ()))
        return cls(**values)

    def step_for(self, event_id: str) -> dict[str, Any] | None:
        return next((s for e, s in self.steps if e == event_id), None)


# ---- steps ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteToServer:
    server_id: str
    topic: str
    reason: str  # alternative_server | compatible_protocol


@dataclass(frozen=True)
class RouteToFallback:
    topic: str


@dataclass(frozen=True)
class ReturnDegraded:
    result: Any
    reason: str  # using_cached_data | using_fallback_implementation
    cached_at: int | None = None


@dataclass(frozen=True)
class EscalateRouting:
    reason: str
    attempted: tuple[str, ...]
    recommended_action: str


Step = RouteToServer | RouteToFallback | ReturnDegraded | EscalateRouting
_STEPS: dict[str, type] = {"route_to_server": RouteToServer, "route_to_fallback": RouteToFallback,
                           "return_degraded": ReturnDegraded, "escalate": EscalateRouting}


def step_to_json(step: Step) -> dict[str, Any]:
    name = next(k for k, v in _STEPS.items() if isinstance(step, v))
    data = asdict(step)
    if isinstance(step, EscalateRouting):
        data["attempted"] = list(step.attempted)
    return {"type": name, **data}


def step_from_json(data: dict[str, Any]) -> Step:
    values = dict(data)
    kind = _STEPS[values.pop("type")]
    if kind is EscalateRouting:
        values["attempted"] = tuple(values["attempted"])
    return kind(**values)  # type: ignore[no-any-return]


# ---- decisions --------------------------------------------------------------------------

def engagement(kind: str, classification_type: str, decision: d.Decision | None,
               plan_active: bool) -> str | None:
    """Whether this strategy acts on a report after the generic decision: `start` a plan
    in `alternatives` or `protocol` mode, `continue` the incident's plan, or None."""
    if kind != KIND:
        return None
    if isinstance(decision, d.AlternativeRoute):
        return "continue" if plan_active else ALTERNATIVES
    if isinstance(decision, d.Escalate):
        if plan_active:
            return "continue"
        if classification_type == PROTOCOL_VERSION:
            return PROTOCOL
    return None


def protocols_compatible(client: str | None, server: str | None,
                         matrix: dict[str, tuple[str, ...]]) -> bool:
    """The same version, or one the compatibility matrix lists for the client's version.
    Unknown versions are never taken for compatible."""
    if not client or not server:
        return False
    return server == client or server in matrix.get(client, ())


def candidates_for(tool: str | None, entries: list[reg.ToolEntry], policy: McpPolicy
                   ) -> list[Candidate]:
    """Servers offering the tool: the registry's (newest version first), then the
    configured alternatives."""
    if not tool:
        return []
    found = [Candidate(e.server_id, policy.topic_of(e.server_id, e.request_topic),
                       e.protocol_version) for e in reg.offering(entries, tool)]
    listed = {c.server_id for c in found}
    found += [Candidate(s, policy.topic_of(s)) for s in policy.alternatives.get(tool, ())
              if s not in listed]
    return found


def new_plan(mode: str, cycle: int, detail: dict[str, Any]) -> Plan:
    return Plan(cycle=cycle, mode=mode, tool=detail.get("tool_name"),
                arguments_json=detail.get("tool_arguments_json"),
                origin_server=detail.get("server_id"),
                client_protocol=detail.get("client_protocol_version")
                if mode == PROTOCOL else None)


def next_step(plan: Plan, *, failed_server: str | None, candidates: list[Candidate],
              cached: reg.CachedResult | None, fallback: Fallback | None,
              policy: McpPolicy) -> Step:
    """The source's tryAlternativeToolRouting (alternatives mode) or handleProtocolMismatch
    (protocol mode), one step at a time: the next server not tried yet, then (alternatives
    only) the cached result, then the fallback implementation, else escalation."""
    tried = {*plan.attempted, plan.origin_server, failed_server}
    for candidate in candidates:
        if candidate.server_id in tried:
            continue
        if plan.client_protocol is not None and not protocols_compatible(
                plan.client_protocol, candidate.protocol_version,
                policy.protocol_compatibility):
            continue
        return RouteToServer(candidate.server_id, candidate.topic,
                             "compatible_protocol" if plan.mode == PROTOCOL
                             else "alternative_server")
    if plan.mode == PROTOCOL:
        return EscalateRouting(
            f"no server offering {plan.tool or 'the tool'} speaks a protocol compatible with "
            f"client version {plan.client_protocol or 'unknown'}", plan.attempted,
            policy.recommended_action)
    if cached is not None:
        return ReturnDegraded(cached.result, USING_CACHED_DATA, cached.stored_at)
    if fallback is not None:
        if fallback.routed and not plan.fallback_routed:
            return RouteToFallback(str(fallback.topic))
        if not fallback.routed:
            return ReturnDegraded(fallback.result, USING_FALLBACK)
    return EscalateRouting(
        f"no alternative server, cached result or fallback implementation answered for "
        f"{plan.tool or 'the tool'}", plan.attempted, policy.recommended_action)


def after_step(plan: Plan, event_id: str, step: Step) -> Plan:
    match step:
        case RouteToServer(server_id=server):
            plan = replace(plan, attempted=(*plan.attempted, server))
        case RouteToFallback():
            plan = replace(plan, fallback_routed=True)
        case _:
            plan = replace(plan, done=True)
    steps = (*plan.steps, (event_id, step_to_json(step)))[-STEPS_KEPT:]
    return replace(plan, steps=steps)


def degraded_reply(tool: str | None, step: ReturnDegraded, incident_id: str) -> bytes:
    """The source's createDegradedResult: the result, marked degraded with the reason."""
    return orjson.dumps({"tool": tool, "result": step.result, "degraded": True,
                         "degradationReason": step.reason, "cachedAt": step.cached_at,
                         "incidentId": incident_id})


def connection_lost_fields(event: dict[str, Any], entries: list[reg.ToolEntry]
                           ) -> dict[str, Any]:
    """The source's communication/mcp_connection_lost payload fields."""
    detail = detail_of(event, DETAIL) or {}
    server = detail.get("server_id")
    last = detail.get("last_successful_connection")
    if hasattr(last, "timestamp"):
        last = int(last.timestamp() * 1000)
    return {"serverId": server, "errorType": event["error"]["type"],
            "lastSuccessfulConnection": last,
            "affectedTools": reg.tools_of(entries, server) if server else []}


# ---- wiring -----------------------------------------------------------------------------

class McpConnectionStrategy(BaseStrategy):
    name = "mcp_connection"
    kinds = frozenset({KIND})

    def __init__(self, app: Any, pipeline: Any):
        import faust

        self.pipeline = pipeline
        self.policy = pipeline.scenario_policies.mcp
        self.registry = reg.ensure(app, pipeline)
        self.plans = app.Table("mcp-routes", default=None, schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"))

    def reported_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        if event["kind"] != KIND:
            return {}
        return connection_lost_fields(event, self.registry.entries())

    async def after_decision(self, ctx: StrategyContext) -> bool:
        event, incident = ctx.event, ctx.incident
        if event["kind"] != KIND:
            return False
        event_id = event["event_id"]
        plan = Plan.from_json(self.plans.get(incident.incident_id))
        if plan is not None and plan.cycle == incident.cycle:
            done_before = plan.step_for(event_id)
            if done_before is not None:  # the same report again (after a crash)
                await self.send_step(ctx, plan, step_from_json(done_before))
                return True
        active = plan is not None and plan.cycle == incident.cycle and not plan.done
        how = engagement(event["kind"], ctx.classification.type, ctx.decision, active)
        if how is None:
            return False
        detail = detail_of(event, DETAIL) or {}
        if how == "continue" and plan is not None:
            if isinstance(ctx.decision, d.AlternativeRoute) and plan.mode == PROTOCOL:
                plan = replace(plan, mode=ALTERNATIVES)
        else:
            plan = new_plan(how, incident.cycle, detail)
        assert plan is not None
        step = self.decide(plan, detail)
        plan = after_step(plan, event_id, step)
        self.plans[incident.incident_id] = plan.to_json()
        self.record_incident(ctx, step)
        await self.send_step(ctx, plan, step)
        return True

    def decide(self, plan: Plan, detail: dict[str, Any]) -> Step:
        entries = self.registry.entries()
        cached = None
        if plan.tool and plan.mode == ALTERNATIVES:
            found = self.registry.cached(plan.tool, plan.arguments_json or "{}")
            cached = found if reg.usable(found, lifecycle.now_ms(),
                                         self.policy.cache_max_age_ms) else None
        return next_step(plan, failed_server=detail.get("server_id"),
                         candidates=candidates_for(plan.tool, entries, self.policy),
                         cached=cached,
                         fallback=self.policy.fallbacks.get(plan.tool or ""),
                         policy=self.policy)

    def record_incident(self, ctx: StrategyContext, step: Step) -> None:
        incident, now = ctx.incident, lifecycle.now_ms()
        match step:
            case RouteToServer(server_id=server, topic=topic):
                after = incident.step(now, f"rerouted to {server}", state="rerouted",
                                      dispatch_target=topic)
            case RouteToFallback(topic=topic):
                after = incident.step(now, "routed to the fallback implementation",
                                      state="rerouted", dispatch_target=topic)
            case ReturnDegraded(reason=reason):
                after = incident.step(now, f"completed degraded ({reason})", state="completed")
            case _:
                after = incident.step(now, "escalated: no alternative", state="escalated")
        ctx.incidents[incident.incident_id] = after.to_json()

    async def send_step(self, ctx: StrategyContext, plan: Plan, step: Step) -> None:
        event, incident, pipeline = ctx.event, ctx.incident, self.pipeline
        event_id, incident_id = event["event_id"], incident.incident_id
        detail = detail_of(event, DETAIL) or {}
        common = {"failure_event_id": event_id,
                  "classification": ctx.classification.as_record(),
                  "attempt": incident.attempts}
        original = routing.original_of(event, ctx.record)
        headers = routing.context(event, original, incident, ctx.classification)
        base = {"toolName": plan.tool, "fromServer": detail.get("server_id"),
                "handler": handler_for(ctx.classification.type)}
        match step:
            case RouteToServer(server_id=server, topic=topic, reason=reason):
                await pipeline.send(routing.redelivery(
                    topic, original.key, original.value,
                    h.with_context(original.headers, headers),
                    **{ROUTED_SERVER_HEADER: server}))
                await pipeline.emit(TOOL_REROUTED, incident_id,
                                    step_id=lifecycle.step_id(event_id, "rerouted"),
                                    payload={**base, "toServer": server, "topic": topic,
                                             "reason": reason,
                                             "attemptedAlternatives": list(plan.attempted)},
                                    **common)
            case RouteToFallback(topic=topic):
                await pipeline.send(routing.redelivery(
                    topic, original.key, original.value,
                    h.with_context(original.headers, headers),
                    **{DEGRADED_HEADER: USING_FALLBACK}))
                await pipeline.emit(TOOL_REROUTED, incident_id,
                                    step_id=lifecycle.step_id(event_id, "rerouted"),
                                    payload={**base, "toServer": None, "topic": topic,
                                             "reason": "fallback_implementation",
                                             "degradationReason": USING_FALLBACK,
                                             "attemptedAlternatives": list(plan.attempted)},
                                    **common)
            case ReturnDegraded(reason=reason, result=result, cached_at=cached_at):
                reply_to = reg.reply_topic_of(original.headers, self.policy.reply_header)
                if reply_to:
                    await pipeline.send(OutRecord(
                        reply_to, original.key, degraded_reply(plan.tool, step, incident_id),
                        h.with_context(h.without(original.headers, (self.policy.reply_header,)),
                                       {DEGRADED_HEADER: reason, h.INCIDENT_ID: incident_id})))
                await pipeline.emit(DEGRADED_RESULT, incident_id,
                                    step_id=lifecycle.step_id(event_id, "degraded-result"),
                                    payload={**base, "degraded": True,
                                             "degradationReason": reason, "result": result,
                                             "cachedAt": cached_at, "replyTopic": reply_to,
                                             "attemptedAlternatives": list(plan.attempted)},
                                    **common)
                first = incident.first_failure_ms
                await pipeline.emit(lifecycle.RECOVERY_COMPLETED, incident_id,
                                    step_id=lifecycle.step_id(incident_id, "completed",
                                                              cycle=incident.cycle),
                                    outcome="completed",
                                    duration_ms=lifecycle.now_ms() - first if first else None,
                                    payload={"degraded": True, "degradationReason": reason,
                                             "attemptsRequired": incident.attempts},
                                    **common)
            case EscalateRouting(reason=reason, attempted=attempted, recommended_action=action):
                await pipeline.emit(lifecycle.ESCALATED, incident_id,
                                    step_id=lifecycle.step_id(event_id, "escalated"),
                                    outcome="escalated",
                                    payload={**base, "reason": reason, "error": ROUTING_ERROR,
                                             "originalError": {
                                                 "type": event["error"]["type"],
                                                 "message": event["error"]["message"],
                                                 "serverId": detail.get("server_id")},
                                             "toolRequest": {
                                                 "toolName": plan.tool,
                                                 "arguments": plan.arguments_json},
                                             "attemptedAlternatives": list(attempted),
                                             "recommendedAction": action},
                                    **common)


def install(app: Any, pipeline: Any) -> McpConnectionStrategy:
    return McpConnectionStrategy(app, pipeline)
