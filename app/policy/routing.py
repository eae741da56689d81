"""Policy data of Scenarios 1-3 (tool routing, tool discovery, event delivery): the
`[scenario.mcp]`, `[scenario.discovery]` and `[scenario.delivery]` tables of
app/policies/defaults.toml, overridden key by key by the file named in RECOVERY_POLICY_FILE.

Everything the strategies may route to is data: alternative servers and fallback
implementations per tool, protocol compatibility, discovery time limits, dynamic-wrapper
patterns and their implementations, alternative delivery per consumer and fallback topics
per topic."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.policy.document import PolicyError, check_keys, read_document


@dataclass(frozen=True)
class Fallback:
    """A tool's fallback implementation: a simplified service to route the request to
    (`topic`), or a fixed result returned at once (`result`, any JSON value)."""

    topic: str | None = None
    result: Any = None

    @property
    def routed(self) -> bool:
        return self.topic is not None


@dataclass(frozen=True)
class McpPolicy:
    # Request topic of a server whose registry entry names none; {server_id} is replaced.
    server_topic: str = "{server_id}.requests"
    # tool -> server ids tried after the registry's servers (in this order).
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # server id -> request topic, for configured alternatives that are not registered.
    servers: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, Fallback] = field(default_factory=dict)
    # A cached result older than this is not used (0 = any age).
    cache_max_age_ms: int = 0
    # client protocol version -> server versions that also work (besides the same version).
    protocol_compatibility: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Header of the tool request naming the topic its result goes back to.
    reply_header: str = "reply-to"
    recommended_action: str = "manual_intervention"

    def topic_of(self, server_id: str, registered: str | None = None) -> str:
        return registered or self.servers.get(server_id) or self.server_topic.format(
            server_id=server_id)


@dataclass(frozen=True)
class DiscoveryPolicy:
    # How long the tool servers have to answer a discovery query.
    query_timeout_ms: int = 5_000
    # How long a semantic match waits for the user's confirmation.
    confirmation_timeout_ms: int = 300_000
    # A registered tool at least this similar (0..1) is suggested.
    min_similarity: float = 0.6
    max_suggestions: int = 3
    # Name patterns of dynamic wrappers, in order, with the kind of tool each creates.
    wrappers: tuple[tuple[str, str], ...] = (
        ("get_*", "getter"), ("set_*", "setter"), ("calculate_*", "calculator"),
        ("send_*", "sender"))
    # kind -> request topic of the generic implementation that serves it. A pattern whose
    # kind has no implementation cannot be wrapped.
    wrapper_topics: dict[str, str] = field(default_factory=dict)
    reply_header: str = "reply-to"

    def wrapper_for(self, tool: str) -> tuple[str, str] | None:
        """(pattern, kind) of the first pattern the tool name matches."""
        for pattern, kind in self.wrappers:
            if fnmatch.fnmatchcase(tool, pattern):
                return pattern, kind
        return None


@dataclass(frozen=True)
class DeliveryPolicy:
    # Redelivery topic of a consumer group not listed in redelivery_topics.
    redelivery_topic: str = "{consumer}.redelivery"
    redelivery_topics: dict[str, str] = field(default_factory=dict)
    # consumer group -> topic an undeliverable event is also sent to at once.
    alternative_delivery: dict[str, str] = field(default_factory=dict)
    # missing topic -> topic its events go to instead ("*" for any topic).
    fallback_topics: dict[str, str] = field(default_factory=dict)

    def redelivery_of(self, consumer: str) -> str:
        return self.redelivery_topics.get(consumer) or self.redelivery_topic.format(
            consumer=consumer)

    def fallback_for(self, topic: str) -> str | None:
        return self.fallback_topics.get(topic) or self.fallback_topics.get("*")


@dataclass(frozen=True)
class ScenarioPolicies:
    mcp: McpPolicy = field(default_factory=McpPolicy)
    discovery: DiscoveryPolicy = field(default_factory=DiscoveryPolicy)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PolicyError(f"{where}: expected a table of strings")
    return {str(k): v for k, v in value.items()}


def _lists(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()):
        raise PolicyError(f"{where}: expected a table of string lists")
    return {str(k): tuple(v) for k, v in value.items()}


def _mcp(entry: dict[str, Any]) -> McpPolicy:
    where = "scenario.mcp"
    check_keys(entry, set(McpPolicy.__dataclass_fields__), where)
    fallbacks: dict[str, Fallback] = {}
    for tool, spec in (entry.get("fallbacks") or {}).items():
        if not isinstance(spec, dict) or set(spec) - {"topic", "result"} or (
                ("topic" in spec) == ("result" in spec)):
            raise PolicyError(f"{where}.fallbacks.{tool}: give exactly one of topic, result")
        fallbacks[str(tool)] = Fallback(topic=spec.get("topic"), result=spec.get("result"))
    defaults = McpPolicy()
    return McpPolicy(
        server_topic=str(entry.get("server_topic", defaults.server_topic)),
        alternatives=_lists(entry.get("alternatives", {}), f"{where}.alternatives"),
        servers=_strings(entry.get("servers", {}), f"{where}.servers"),
        fallbacks=fallbacks,
        cache_max_age_ms=int(entry.get("cache_max_age_ms", defaults.cache_max_age_ms)),
        protocol_compatibility=_lists(entry.get("protocol_compatibility", {}),
                                      f"{where}.protocol_compatibility"),
        reply_header=str(entry.get("reply_header", defaults.reply_header)),
        recommended_action=str(entry.get("recommended_action", defaults.recommended_action)),
    )


def _discovery(entry: dict[str, Any]) -> DiscoveryPolicy:
    where = "scenario.discovery"
    check_keys(entry, set(DiscoveryPolicy.__dataclass_fields__), where)
    defaults = DiscoveryPolicy()
    wrappers = defaults.wrappers
    if "wrappers" in entry:
        raw = entry["wrappers"]
        if not isinstance(raw, list) or not all(
                isinstance(w, dict) and set(w) == {"pattern", "kind"} for w in raw):
            raise PolicyError(f"{where}.wrappers: expected a list of {{pattern, kind}} tables")
        wrappers = tuple((str(w["pattern"]), str(w["kind"])) for w in raw)
    similarity = float(entry.get("min_similarity", defaults.min_similarity))
    if not 0 <= similarity <= 1:
        raise PolicyError(f"{where}.min_similarity must be between 0 and 1")
    return DiscoveryPolicy(
        query_timeout_ms=int(entry.get("query_timeout_ms", defaults.query_timeout_ms)),
        confirmation_timeout_ms=int(entry.get("confirmation_timeout_ms",
                                              defaults.confirmation_timeout_ms)),
        min_similarity=similarity,
        max_suggestions=int(entry.get("max_suggestions", defaults.max_suggestions)),
        wrappers=wrappers,
        wrapper_topics=_strings(entry.get("wrapper_topics", {}), f"{where}.wrapper_topics"),
        reply_header=str(entry.get("reply_header", defaults.reply_header)),
    )


def _delivery(entry: dict[str, Any]) -> DeliveryPolicy:
    where = "scenario.delivery"
    check_keys(entry, set(DeliveryPolicy.__dataclass_fields__), where)
    defaults = DeliveryPolicy()
    return DeliveryPolicy(
        redelivery_topic=str(entry.get("redelivery_topic", defaults.redelivery_topic)),
        redelivery_topics=_strings(entry.get("redelivery_topics", {}),
                                   f"{where}.redelivery_topics"),
        alternative_delivery=_strings(entry.get("alternative_delivery", {}),
                                      f"{where}.alternative_delivery"),
        fallback_topics=_strings(entry.get("fallback_topics", {}), f"{where}.fallback_topics"),
    )


def parse_scenario_policies(scenario: dict[str, Any]) -> ScenarioPolicies:
    """From the merged `[scenario]` tables (PolicyDocument.scenario)."""
    return ScenarioPolicies(mcp=_mcp(scenario.get("mcp", {})),
                            discovery=_discovery(scenario.get("discovery", {})),
                            delivery=_delivery(scenario.get("delivery", {})))


def load_scenario_policies(override: Path | None = None) -> ScenarioPolicies:
    return parse_scenario_policies(read_document(override).scenario)
