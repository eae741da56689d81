"""Logical topic names, before the deployment's prefix (Settings.topic adds it)."""

from __future__ import annotations

FAILURES = "recovery.failures"
COMMANDS = "recovery.incident-commands"
EVENTS = "recovery.events"
DLQ = "recovery.dlq"
POISON = "recovery.poison"
HEARTBEATS = "recovery.heartbeats"
WATCHES = "recovery.watches"
REPLAY_PROGRESS = "recovery.replay-progress"
RETRY_TIER_PREFIX = "recovery.retry."
REDELIVERY_SUFFIX = ".redelivery"


def redelivery_topic(group: str) -> str:
    """The topic a consumer group's failed records come back on: `<group>.redelivery`."""
    return f"{group}{REDELIVERY_SUFFIX}"
