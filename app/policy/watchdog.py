"""The `[watchdog]` table of the policy data: per non-terminal incident state, what the
watchdog does once the incident is past its deadline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.policy.document import PolicyDocument, PolicyError, check_keys

REDISPATCH_THEN_DEAD_LETTER = "redispatch_then_dead_letter"
ESCALATE = "escalate"
NONE = "none"
ACTIONS = (REDISPATCH_THEN_DEAD_LETTER, ESCALATE, NONE)


@dataclass(frozen=True)
class WatchdogPolicy:
    held_limit_ms: int = 300_000
    actions: dict[str, str] = field(default_factory=lambda: {
        "retrying": REDISPATCH_THEN_DEAD_LETTER, "rerouted": ESCALATE, "split": NONE})

    def action_for(self, state: str) -> str:
        return self.actions.get(state, ESCALATE)


def parse_watchdog(document: PolicyDocument) -> WatchdogPolicy:
    entry: dict[str, Any] = {**document.base.get("watchdog", {}),
                             **document.extra.get("watchdog", {})}
    check_keys(entry, {"held_limit_ms", "states"}, "watchdog")
    states = {**document.base.get("watchdog", {}).get("states", {}),
              **document.extra.get("watchdog", {}).get("states", {})}
    for state, action in states.items():
        if action not in ACTIONS:
            raise PolicyError(f"watchdog.states.{state}: {action!r} is not one of "
                              f"{', '.join(ACTIONS)}")
    held = entry.get("held_limit_ms", 300_000)
    if not isinstance(held, int) or held <= 0:
        raise PolicyError("watchdog.held_limit_ms: expected a positive number of ms")
    return WatchdogPolicy(held_limit_ms=held, actions=dict(states))
