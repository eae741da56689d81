"""Recovery policies as data: classification rules and retry schedules, loaded from the
packaged defaults and an optional override file."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.policy.document import PolicyDocument, PolicyError, read_document

__all__ = ["ClassificationRule", "Exhausted", "Policies", "PolicyError", "RetryPolicy",
           "load_policies", "parse_policies"]

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")
RECOVERABILITIES = ("recoverable", "partially_recoverable", "non_recoverable")


class Exhausted(StrEnum):
    DEAD_LETTER = "dead_letter"
    ESCALATE = "escalate"
    ALTERNATIVE_ROUTE = "alternative_route"
    POISON = "poison"


@dataclass(frozen=True)
class ClassificationRule:
    severity: str
    category: str
    type: str
    recoverability: str
    error_types: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    reported_severities: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: str = "exponential"
    initial_ms: int = 1000
    multiplier: float = 2.0
    max_ms: int = 30000
    jitter: float = 0.0
    on_exhausted: Exhausted = Exhausted.DEAD_LETTER


@dataclass(frozen=True)
class Policies:
    rules: tuple[ClassificationRule, ...]
    retry: dict[str, RetryPolicy] = field(default_factory=dict)

    def retry_for(self, classification_type: str) -> RetryPolicy:
        return self.retry.get(classification_type) or self.retry.get("default") or RetryPolicy()


def _rule(entry: dict[str, Any], where: str) -> ClassificationRule:
    try:
        rule = ClassificationRule(
            severity=str(entry["severity"]),
            category=str(entry["category"]),
            type=str(entry["type"]),
            recoverability=str(entry["recoverability"]),
            error_types=frozenset(entry.get("error_types", ())),
            kinds=frozenset(entry.get("kinds", ())),
            reported_severities=frozenset(s.upper() for s in entry.get("reported_severities", ())),
        )
    except KeyError as exc:
        raise PolicyError(f"{where}: classification rule lacks {exc}") from None
    if rule.severity != "reported" and rule.severity not in SEVERITIES:
        raise PolicyError(f"{where}: severity {rule.severity!r} is not one of {SEVERITIES}")
    if rule.recoverability not in RECOVERABILITIES:
        raise PolicyError(f"{where}: recoverability {rule.recoverability!r} is unknown")
    return rule


def _retry(entry: dict[str, Any], where: str) -> RetryPolicy:
    known = set(RetryPolicy.__dataclass_fields__)
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown retry settings {sorted(unknown)}")
    values = dict(entry)
    try:
        if "on_exhausted" in values:
            values["on_exhausted"] = Exhausted(values["on_exhausted"])
    except ValueError:
        raise PolicyError(f"{where}: on_exhausted {entry['on_exhausted']!r} is unknown") from None
    if values.get("backoff", "exponential") not in ("exponential", "fixed"):
        raise PolicyError(f"{where}: backoff must be exponential or fixed")
    return RetryPolicy(**values)


def parse_policies(document: PolicyDocument) -> Policies:
    override = document.override
    entries = [(e, f"{override}") for e in document.extra.get("classification", [])]
    entries += [(e, "defaults") for e in document.base.get("classification", [])]
    rules = tuple(_rule(e, f"{where} classification #{i}") for i, (e, where) in enumerate(entries))
    retry_entries = {**document.base.get("retry", {}), **document.extra.get("retry", {})}
    retry = {name: _retry(e, f"retry.{name}") for name, e in retry_entries.items()}
    return Policies(rules=rules, retry=retry)


def load_policies(override: Path | None = None) -> Policies:
    return parse_policies(read_document(override))
