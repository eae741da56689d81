"""Scenario 2: tool discovery failures (the source's ToolDiscoveryFailureHandler).

A CompositeToolRunner that cannot find a tool reports TOOL_DISCOVERY_FAILED with a
ToolDiscoveryFailed detail (tool name, error type, searched locations, a description of
what the tool should do) and, when it has one, the tool request as the failed record. The
generic pipeline emits `communication/tool_discovery_failed` (with the source's toolName,
errorType, searchedLocations and timestamp) and, by `[retry.tool_discovery]`, retries
nothing; the source's progressive discovery runs here, strategy by strategy:

1. registry_refresh: the tool registry (app/scenarios/tool_registry.py) is looked up;
2. server_query: a query goes to every tool server on `recovery.tool-queries`; a server
   offering the tool answers on the query's reply topic (the scenario watches topic) within
   `query_timeout_ms`; the tool found is registered on the servers' behalf;
3. semantic_matching: registered tools are ranked by similarity of name and description;
   the best at or above `min_similarity` is suggested (`communication/semantic_tool_match_
   found`, requiresUserConfirmation) and the request routed to it only once a confirmation
   arrives within `confirmation_timeout_ms` (`ToolDirectoryClient.confirm_match`); refused
   or unanswered: `communication/semantic_tool_match_declined`, next strategy;
4. dynamic_wrapping: a name matching a wrapper pattern (get_*, set_*, calculate_*, send_*)
   is served by the generic implementation configured for its kind;
5. else `recovery/escalated` with the source's ToolNotFoundError fields: strategiesAttempted
   and recommendations.

A tool found is announced in `communication/tool_discovered` (strategy, descriptor), the
request (if any) is routed to it, and the incident completes through the same
acknowledgement a consumer sends (`recovery/recovery_completed`). Steps 2-4 wait on the
scenario watches (app/scenarios/watches.py), so their continuation runs in the watch agent."""

from __future__ import annotations

import base64
import difflib
import logging
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.records import OutRecord
from app.pipeline import outcomes as routing
from app.pipeline.strategy import BaseStrategy, StrategyContext
from app.policy.routing import DiscoveryPolicy, McpPolicy
from app.scenarios.shared import tool_registry as reg
from app.scenarios.shared import watches as w
from app.scenarios.shared.incidents import detail_of, occurred_ms

log = logging.getLogger(__name__)

KIND = "TOOL_DISCOVERY_FAILED"
DETAIL = "ToolDiscoveryFailed"

REGISTRY_REFRESH = "registry_refresh"
SERVER_QUERY = "server_query"
SEMANTIC_MATCHING = "semantic_matching"
DYNAMIC_WRAPPING = "dynamic_wrapping"
STRATEGIES = (REGISTRY_REFRESH, SERVER_QUERY, SEMANTIC_MATCHING, DYNAMIC_WRAPPING)

TOOL_DISCOVERY_FAILED = "communication/tool_discovery_failed"
SERVERS_QUERIED = "communication/tool_servers_queried"
SEMANTIC_MATCH_FOUND = "communication/semantic_tool_match_found"
SEMANTIC_MATCH_DECLINED = "communication/semantic_tool_match_declined"
TOOL_DISCOVERED = "communication/tool_discovered"
NOT_FOUND_ERROR = "ToolNotFoundError"

QUERY_WATCH = "tool-discovery-query"
CONFIRM_WATCH = "tool-discovery-confirmation"
RESOLVED_TOOL_HEADER = h.PREFIX + "tool.resolved"
STRATEGY_HEADER = h.PREFIX + "discovery.strategy"


# ---- similarity -------------------------------------------------------------------------

def tokens(text: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text or "")
    return {t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if len(t) > 1}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def similarity(name: str, description: str, other_name: str, other_description: str) -> float:
    """0..1: 0.6 of the names' character similarity (difflib), 0.4 of the overlap of the
    words of name and description (Jaccard); names without words: characters only."""
    chars = difflib.SequenceMatcher(None, name.lower(), other_name.lower()).ratio()
    mine, theirs = tokens(f"{name} {description}"), tokens(f"{other_name} {other_description}")
    if not mine and not theirs:
        return round(chars, 4)
    return round(0.6 * chars + 0.4 * jaccard(mine, theirs), 4)


@dataclass(frozen=True)
class Match:
    entry: reg.ToolEntry
    similarity: float


def semantic_matches(tool: str, description: str, entries: list[reg.ToolEntry],
                     min_similarity: float, limit: int) -> list[Match]:
    """Registered tools (one per name: the newest version) at least min_similarity like the
    requested one, best first."""
    best: dict[str, reg.ToolEntry] = {}
    for entry in entries:
        if entry.tool == tool:
            continue
        current = best.get(entry.tool)
        if current is None or reg.offering([entry, current], entry.tool)[0] is entry:
            best[entry.tool] = entry
    ranked = sorted((Match(e, similarity(tool, description, e.tool, e.description))
                     for e in best.values()), key=lambda m: (-m.similarity, m.entry.tool))
    return [m for m in ranked if m.similarity >= min_similarity][:limit]


# ---- steps ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Discovered:
    strategy: str
    descriptor: dict[str, Any]
    topic: str | None  # where the request goes (None: nowhere to run it)
    tool: str  # the tool the request is to be served by


@dataclass(frozen=True)
class QueryServers:
    timeout_ms: int


@dataclass(frozen=True)
class AskConfirmation:
    suggested: dict[str, Any]  # ToolEntry.to_json()
    similarity: float
    alternatives: tuple[tuple[str, float], ...]
    timeout_ms: int


@dataclass(frozen=True)
class NotFound:
    strategies_attempted: tuple[str, ...]
    recommendations: tuple[str, ...]


DiscoveryStep = Discovered | QueryServers | AskConfirmation | NotFound


def served_at(entry: reg.ToolEntry, servers: McpPolicy) -> Discovered:
    """A registered tool (found by the registry), served at its server's request topic."""
    topic = servers.topic_of(entry.server_id, entry.request_topic)
    return Discovered(REGISTRY_REFRESH, {**entry.descriptor(), "requestTopic": topic}, topic,
                      entry.tool)


def first_step(tool: str | None, entries: list[reg.ToolEntry], policy: DiscoveryPolicy,
               servers: McpPolicy) -> DiscoveryStep:
    """Strategy 1 (the registry), else the query of strategy 2 (answered later)."""
    if not tool:
        return NotFound((), ("the report names no tool: give ToolDiscoveryFailed.tool_name",))
    offering = reg.offering(entries, tool)
    if offering:
        return served_at(offering[0], servers)
    return QueryServers(policy.query_timeout_ms)


def query_answer(tool: str, result: dict[str, Any]) -> reg.ToolEntry | None:
    """A server's answer to the query: the tool it offers, if it is the one asked for."""
    try:
        entry = reg.ToolEntry.from_json(dict(result.get("tool") or {}))
    except TypeError:
        return None
    return entry if entry.tool == tool and entry.server_id else None


def wrapper_step(tool: str, policy: DiscoveryPolicy) -> Discovered | None:
    """Strategy 4, the source's createDynamicToolWrapper: the first pattern the name
    matches, served by the implementation configured for its kind."""
    matched = policy.wrapper_for(tool)
    if matched is None:
        return None
    pattern, kind = matched
    topic = policy.wrapper_topics.get(kind)
    if topic is None:
        return None
    subject = tool[len(pattern) - 1:] if pattern.endswith("*") else tool
    return Discovered(DYNAMIC_WRAPPING, {"name": tool, "kind": kind, "pattern": pattern,
                                         "subject": subject, "dynamic": True,
                                         "requestTopic": topic}, topic, tool)


def recommendations(tool: str, searched: list[str], entries: list[reg.ToolEntry],
                    policy: DiscoveryPolicy) -> tuple[str, ...]:
    """The source's generateDiscoveryRecommendations."""
    out = [f"have a tool server offer {tool}: announce it on {reg.TOPIC}"]
    near = semantic_matches(tool, "", entries, 0.3, policy.max_suggestions)
    if near:
        out.append("did you mean " + ", ".join(m.entry.tool for m in near) + "?")
    matched = policy.wrapper_for(tool)
    if matched:
        out.append(f"configure [scenario.discovery.wrapper_topics] {matched[1]} to serve "
                   f"{matched[0]} tools with a generic implementation")
    else:
        patterns = ", ".join(p for p, _ in policy.wrappers)
        out.append(f"a name following one of {patterns} can be served by a dynamic wrapper")
    if searched:
        out.append("check the searched locations: " + ", ".join(searched))
    return tuple(out)


def after_failed(stage: str, tool: str, description: str, searched: list[str],
                 entries: list[reg.ToolEntry], policy: DiscoveryPolicy) -> DiscoveryStep:
    """What follows when a strategy found nothing: the server query is followed by the
    semantic match, the semantic match by the dynamic wrapper, that by ToolNotFound."""
    if stage == SERVER_QUERY:
        matches = semantic_matches(tool, description, entries, policy.min_similarity,
                                   policy.max_suggestions)
        if matches:
            best = matches[0]
            return AskConfirmation(best.entry.to_json(), best.similarity,
                                   tuple((m.entry.tool, m.similarity) for m in matches[1:]),
                                   policy.confirmation_timeout_ms)
    return wrapper_step(tool, policy) or NotFound(STRATEGIES, recommendations(
        tool, searched, entries, policy))


def confirmed(result: dict[str, Any]) -> bool:
    return result.get("confirmed") is True


def query_record(watch_id: str, tool: str, description: str, reply_topic: str,
                 deadline_ms: int) -> bytes:
    return orjson.dumps({"watch_id": watch_id, "tool": tool, "description": description,
                         "reply_topic": reply_topic, "deadline": deadline_ms})


def discovery_failed_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The source's communication/tool_discovery_failed payload fields."""
    detail = detail_of(event, DETAIL) or {}
    return {"toolName": detail.get("tool_name"),
            "errorType": detail.get("error_type") or event["error"]["type"],
            "searchedLocations": list(detail.get("searched_locations") or []),
            "timestamp": occurred_ms(event)}


# ---- the request, carried through the watches ------------------------------------------

def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _unb64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def pack_request(key: bytes | None, value: bytes | None, headers: h.Headers) -> dict[str, Any]:
    return {"key": _b64(key), "value": _b64(value),
            "headers": [[k, _b64(v)] for k, v in headers]}


def unpack_request(data: dict[str, Any]) -> tuple[bytes | None, bytes | None, h.Headers]:
    return (_unb64(data.get("key")), _unb64(data.get("value")),
            [(k, _unb64(v)) for k, v in data.get("headers", [])])


# ---- wiring -----------------------------------------------------------------------------

class ToolDiscoveryStrategy(BaseStrategy):
    name = "tool_discovery"
    kinds = frozenset({KIND})

    def __init__(self, app: Any, pipeline: Any):
        import faust

        self.pipeline = pipeline
        policies = pipeline.scenario_policies
        self.policy = policies.discovery
        self.servers = policies.mcp
        self.registry = reg.ensure(app, pipeline)
        self.watches = w.ensure(app, pipeline)
        self.watches.register(QUERY_WATCH, self.on_query_answered, self.on_query_expired)
        self.watches.register(CONFIRM_WATCH, self.on_confirmation, self.on_unconfirmed)
        self.queries_topic = pipeline.settings.topic(reg.QUERIES_TOPIC)
        # The first step taken for each report, so a report read again sends it again.
        self.started = app.Table("tool-discoveries", default=None, schema=faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"))

    def reported_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        return discovery_failed_fields(event) if event["kind"] == KIND else {}

    async def after_decision(self, ctx: StrategyContext) -> bool:
        event, incident = ctx.event, ctx.incident
        if event["kind"] != KIND:
            return False
        event_id = event["event_id"]
        detail = detail_of(event, DETAIL) or {}
        original = routing.original_of(event, ctx.record)
        headers = h.with_context(original.headers, routing.context(
            event, original, incident, ctx.classification))
        data = {
            "incident_id": incident.incident_id, "event_id": event_id,
            "tool": detail.get("tool_name"), "description": detail.get("description") or "",
            "searched": list(detail.get("searched_locations") or []),
            "error": {"type": detail.get("error_type") or event["error"]["type"],
                      "message": event["error"]["message"]},
            "classification": ctx.classification.as_record(),
            "attempted": [REGISTRY_REFRESH],
            "request": pack_request(original.key, original.value, headers)
            if event.get("failed_record") else None,
        }
        before = self.started.get(incident.incident_id)
        if before and before.get("event_id") == event_id:
            step = step_from_json(before["step"])
            started_at = int(before["at"])
        else:
            step = first_step(data["tool"], self.registry.entries(), self.policy, self.servers)
            started_at = lifecycle.now_ms()
            self.started[incident.incident_id] = {"event_id": event_id, "at": started_at,
                                                  "step": step_to_json(step)}
            done = isinstance(step, NotFound)
            ctx.incidents[incident.incident_id] = incident.step(
                started_at, "tool not found" if done else "discovering",
                state="escalated" if done else "discovering").to_json()
        await self.take(step, data, started_at)
        return True

    async def take(self, step: DiscoveryStep, data: dict[str, Any], now: int) -> None:
        """Sends what a step calls for."""
        event_id, incident_id = data["event_id"], data["incident_id"]
        common = {"failure_event_id": event_id, "classification": data["classification"]}
        match step:
            case Discovered():
                await self.discovered(step, data)
            case QueryServers(timeout_ms=timeout):
                watch_id = f"{event_id}:{SERVER_QUERY}"
                deadline = now + timeout
                await self.watches.start(w.Watch(watch_id, QUERY_WATCH, incident_id, now,
                                                 deadline, {**data,
                                                            "attempted": [REGISTRY_REFRESH,
                                                                          SERVER_QUERY]}))
                await self.pipeline.send(OutRecord(
                    self.queries_topic, str(data["tool"]).encode(),
                    query_record(watch_id, data["tool"], data["description"],
                                 self.watches.topic_name, deadline), []))
                await self.pipeline.emit(SERVERS_QUERIED, incident_id,
                                         step_id=lifecycle.step_id(event_id, "servers-queried"),
                                         payload={"toolName": data["tool"], "queryId": watch_id,
                                                  "timeoutMs": timeout,
                                                  "queryTopic": self.queries_topic,
                                                  "strategiesAttempted": [REGISTRY_REFRESH]},
                                         **common)
            case AskConfirmation(suggested=suggested, similarity=score, timeout_ms=timeout):
                watch_id = f"{event_id}:confirmation"
                await self.watches.start(w.Watch(watch_id, CONFIRM_WATCH, incident_id, now,
                                                 now + timeout, {
                                                     **data, "suggested": suggested,
                                                     "attempted": [*data["attempted"],
                                                                   SEMANTIC_MATCHING]}))
                await self.pipeline.emit(SEMANTIC_MATCH_FOUND, incident_id,
                                         step_id=lifecycle.step_id(event_id, "semantic-match"),
                                         payload={"requestedTool": data["tool"],
                                                  "suggestedTool": suggested["tool"],
                                                  "similarity": score,
                                                  "requiresUserConfirmation": True,
                                                  "confirmationId": watch_id,
                                                  "confirmationTopic": self.watches.topic_name,
                                                  "expiresAt": now + timeout,
                                                  "alternatives": [
                                                      {"tool": t, "similarity": s}
                                                      for t, s in step.alternatives]},
                                         **common)
            case NotFound(strategies_attempted=attempted, recommendations=advice):
                await self.pipeline.emit(
                    lifecycle.ESCALATED, incident_id,
                    step_id=lifecycle.step_id(event_id, "escalated"),
                    outcome="escalated",
                    payload={"reason": f"no discovery strategy found {data['tool']}",
                             "error": NOT_FOUND_ERROR, "toolName": data["tool"],
                             "originalError": data["error"],
                             "strategiesAttempted": list(attempted),
                             "recommendations": list(advice)}, **common)

    async def discovered(self, step: Discovered, data: dict[str, Any]) -> None:
        event_id, incident_id = data["event_id"], data["incident_id"]
        routed = None
        if data.get("request") and step.topic:
            key, value, headers = unpack_request(data["request"])
            await self.pipeline.send(routing.redelivery(
                step.topic, key, value, headers,
                **{RESOLVED_TOOL_HEADER: step.tool, STRATEGY_HEADER: step.strategy}))
            routed = step.topic
        await self.pipeline.emit(TOOL_DISCOVERED, incident_id,
                                 step_id=lifecycle.step_id(event_id, "discovered"),
                                 failure_event_id=event_id,
                                 classification=data["classification"],
                                 payload={"toolName": data["tool"], "strategy": step.strategy,
                                          "tool": step.descriptor, "routedTo": routed,
                                          "strategiesAttempted": data["attempted"]})
        await self.pipeline.send(OutRecord(
            self.pipeline.topics.commands, incident_id.encode(), b"", [(h.COMMAND, b"ack")]))

    # ---- continuations, in the watch agent ----------------------------------------------

    async def on_query_answered(self, watch: w.Watch, result: dict[str, Any]) -> None:
        data = watch.data
        entry = query_answer(str(data["tool"]), result)
        if entry is None:
            log.warning("discovery query %s: answer %r does not offer %s", watch.watch_id,
                        result, data["tool"])
            await self.on_query_expired(watch)
            return
        await self.registry.register(entry)
        await self.discovered(replace(served_at(entry, self.servers), strategy=SERVER_QUERY),
                              data)

    async def on_query_expired(self, watch: w.Watch) -> None:
        await self.proceed(SERVER_QUERY, watch.data)

    async def on_confirmation(self, watch: w.Watch, result: dict[str, Any]) -> None:
        data = watch.data
        if not confirmed(result):
            await self.declined(data, "refused", result.get("by"))
            return
        found = served_at(reg.ToolEntry.from_json(data["suggested"]), self.servers)
        await self.discovered(replace(found, strategy=SEMANTIC_MATCHING, descriptor={
            **found.descriptor, "confirmedBy": result.get("by")}), data)

    async def on_unconfirmed(self, watch: w.Watch) -> None:
        await self.declined(watch.data, "timeout", None)

    async def declined(self, data: dict[str, Any], reason: str, by: Any) -> None:
        await self.pipeline.emit(SEMANTIC_MATCH_DECLINED, data["incident_id"],
                                 step_id=lifecycle.step_id(data["event_id"],
                                                           "semantic-match-declined"),
                                 failure_event_id=data["event_id"],
                                 classification=data["classification"],
                                 payload={"requestedTool": data["tool"],
                                          "suggestedTool": data["suggested"]["tool"],
                                          "reason": reason, "by": by})
        await self.proceed(SEMANTIC_MATCHING, data)

    async def proceed(self, stage: str, data: dict[str, Any]) -> None:
        step = after_failed(stage, str(data["tool"]), data["description"], data["searched"],
                            self.registry.entries(), self.policy)
        attempted = list(data["attempted"])
        if stage == SERVER_QUERY and not isinstance(step, AskConfirmation):
            attempted.append(SEMANTIC_MATCHING)  # nothing similar enough to suggest
        if isinstance(step, Discovered):
            attempted.append(DYNAMIC_WRAPPING)
        await self.take(step, {**data, "attempted": attempted}, lifecycle.now_ms())


_STEPS: dict[str, type] = {"discovered": Discovered, "query_servers": QueryServers,
                           "ask_confirmation": AskConfirmation, "not_found": NotFound}


def step_to_json(step: DiscoveryStep) -> dict[str, Any]:
    name = next(k for k, v in _STEPS.items() if isinstance(step, v))
    return {"type": name, **orjson.loads(orjson.dumps(asdict(step)))}


def step_from_json(data: dict[str, Any]) -> DiscoveryStep:
    values = dict(data)
    kind = _STEPS[values.pop("type")]
    if kind is NotFound:
        values = {k: tuple(v) for k, v in values.items()}
    if kind is AskConfirmation:
        values["alternatives"] = tuple(tuple(a) for a in values["alternatives"])
    return kind(**values)  # type: ignore[no-any-return]


def install(app: Any, pipeline: Any) -> ToolDiscoveryStrategy:
    return ToolDiscoveryStrategy(app, pipeline)
