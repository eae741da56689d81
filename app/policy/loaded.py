"""Every policy the worker uses, parsed from one read of the policy data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.policy.document import read_document
from app.policy.routing import ScenarioPolicies, parse_scenario_policies
from app.policy.rules import Policies, parse_policies
from app.policy.state import StatePolicies, state_policies
from app.policy.watchdog import WatchdogPolicy, parse_watchdog


@dataclass(frozen=True)
class PolicySet:
    recovery: Policies  # classification rules and retry schedules
    scenarios: ScenarioPolicies  # MCP routing, tool discovery, event delivery
    state: StatePolicies  # cache conflicts, partitions, coordination
    watchdog: WatchdogPolicy  # incidents open past their deadline


def load_policy_set(override: Path | None = None) -> PolicySet:
    document = read_document(override)
    return PolicySet(recovery=parse_policies(document),
                     scenarios=parse_scenario_policies(document.scenario),
                     state=state_policies(document.scenario),
                     watchdog=parse_watchdog(document))
