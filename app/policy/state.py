"""Policy data of Scenarios 5-7 (cache corruption and version conflicts, network partition,
coordinated recovery): the `[scenario.cache]`, `[scenario.partition]` and
`[scenario.coordination]` tables of app/policies/defaults.toml, overridden key by key by
the file named in RECOVERY_POLICY_FILE. Time limits are settings (RECOVERY_*_MS)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.policy.document import PolicyError, check_keys, merge, read_document

# Conflict strategies by name (app/pipeline/conflicts.py resolves by them).
LAST_WRITE_WINS = "last_write_wins"
MERGE = "merge_versions"
MANUAL = "manual_resolution_required"
FIXED_STRATEGIES = (LAST_WRITE_WINS, MERGE, MANUAL)
USE_SOURCE = re.compile(r"^use_(?P<source>.+)_version$")


class UnknownStrategy(ValueError):
    """A configured strategy name this resolver does not know."""


def check_strategy(strategy: str) -> str:
    if strategy in FIXED_STRATEGIES or USE_SOURCE.match(strategy):
        return strategy
    raise UnknownStrategy(
        f"conflict strategy {strategy!r} is not one of {', '.join(FIXED_STRATEGIES)} "
        "or use_<source>_version")


@dataclass(frozen=True)
class CachePolicy:
    # The source's conflictResolutionStrategy ('last_write_wins', configurable).
    version_conflict_strategy: str = "last_write_wins"
    # Per cache-key glob, in order: the first match wins over the default above.
    key_strategies: tuple[tuple[str, str], ...] = ()
    # TTL of an entry refreshed after corruption (the source's calculateRefreshTtl).
    refresh_ttl_ms: int = 3_600_000

    def strategy_for(self, key: str) -> str:
        for pattern, strategy in self.key_strategies:
            if fnmatch.fnmatchcase(key, pattern):
                return strategy
        return self.version_conflict_strategy


@dataclass(frozen=True)
class PartitionPolicy:
    conflict_strategy: str = "last_write_wins"
    # What enterPartitionedMode configures (the source's four switches), and degraded mode.
    autonomous: dict[str, Any] = field(default_factory=lambda: {
        "disableRemoteStateSync": True, "enableLocalLeaderElection": True,
        "increaseLocalCaching": True, "enableConflictLogging": True})
    degraded: dict[str, Any] = field(default_factory=lambda: {
        "disableRemoteStateSync": True, "enableLocalLeaderElection": False,
        "readOnly": True, "enableConflictLogging": True})


@dataclass(frozen=True)
class CoordinationPolicy:
    # Distinct failure patterns active within the window that call for a coordinated plan.
    min_patterns: int = 2
    # failure kind -> communication pattern
    patterns: dict[str, str] = field(default_factory=lambda: {
        "MCP_CONNECTION_LOST": "tool_routing", "TOOL_DISCOVERY_FAILED": "tool_routing",
        "EVENT_DELIVERY_FAILED": "event_bus", "CONSUMER_CRASHED": "event_bus",
        "PROCESSING_FAILED": "event_bus", "CACHE_CORRUPTED": "state_sync",
        "VERSION_CONFLICT": "state_sync", "NETWORK_PARTITION": "network"})
    # Patterns whose recovery steps are critical (run first; a failed one stops the plan).
    critical_patterns: tuple[str, ...] = ("network", "event_bus")


@dataclass(frozen=True)
class StatePolicies:
    cache: CachePolicy = field(default_factory=CachePolicy)
    partition: PartitionPolicy = field(default_factory=PartitionPolicy)
    coordination: CoordinationPolicy = field(default_factory=CoordinationPolicy)




def _strategy(value: Any, where: str) -> str:
    try:
        return check_strategy(str(value))
    except UnknownStrategy as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PolicyError(f"{where}: expected a positive whole number, got {value!r}")
    return value


def _cache(entry: dict[str, Any]) -> CachePolicy:
    where = "scenario.cache"
    check_keys(entry, set(CachePolicy.__dataclass_fields__), where)
    keys = entry.get("key_strategies", {})
    if not isinstance(keys, dict):
        raise PolicyError(f"{where}.key_strategies: expected a table of glob = strategy")
    return CachePolicy(
        version_conflict_strategy=_strategy(entry.get("version_conflict_strategy",
                                                      "last_write_wins"), where),
        key_strategies=tuple((str(k), _strategy(v, f"{where}.key_strategies.{k}"))
                             for k, v in keys.items()),
        refresh_ttl_ms=_positive_int(entry.get("refresh_ttl_ms", 3_600_000),
                                     f"{where}.refresh_ttl_ms"))


def _partition(entry: dict[str, Any]) -> PartitionPolicy:
    where = "scenario.partition"
    check_keys(entry, set(PartitionPolicy.__dataclass_fields__), where)
    defaults = PartitionPolicy()
    for name in ("autonomous", "degraded"):
        if not isinstance(entry.get(name, {}), dict):
            raise PolicyError(f"{where}.{name}: expected a table of settings")
    return PartitionPolicy(
        conflict_strategy=_strategy(entry.get("conflict_strategy", "last_write_wins"), where),
        autonomous=dict(entry.get("autonomous") or defaults.autonomous),
        degraded=dict(entry.get("degraded") or defaults.degraded))


def _coordination(entry: dict[str, Any]) -> CoordinationPolicy:
    where = "scenario.coordination"
    check_keys(entry, set(CoordinationPolicy.__dataclass_fields__), where)
    defaults = CoordinationPolicy()
    patterns = entry.get("patterns", defaults.patterns)
    critical = entry.get("critical_patterns", list(defaults.critical_patterns))
    if not isinstance(patterns, dict) or not all(isinstance(v, str) for v in patterns.values()):
        raise PolicyError(f"{where}.patterns: expected a table of kind = pattern")
    if not isinstance(critical, list) or not all(isinstance(v, str) for v in critical):
        raise PolicyError(f"{where}.critical_patterns: expected a list of patterns")
    return CoordinationPolicy(
        min_patterns=_positive_int(entry.get("min_patterns", 2), f"{where}.min_patterns"),
        patterns=dict(patterns), critical_patterns=tuple(critical))


def parse_state_policies(base: dict[str, Any], extra: dict[str, Any]) -> StatePolicies:
    return state_policies(merge(base.get("scenario", {}), extra.get("scenario", {})))


def state_policies(scenario: dict[str, Any]) -> StatePolicies:
    """From the merged `[scenario]` tables (PolicyDocument.scenario)."""
    return StatePolicies(cache=_cache(scenario.get("cache", {})),
                         partition=_partition(scenario.get("partition", {})),
                         coordination=_coordination(scenario.get("coordination", {})))


def load_state_policies(override: Path | None = None) -> StatePolicies:
    return state_policies(read_document(override).scenario)
