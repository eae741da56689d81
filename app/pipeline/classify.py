"""Classifying a failure: severity, category, type and recoverability, by the first rule
that matches (rules are data, see app/policies/defaults.toml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from app.policy.rules import SEVERITIES, ClassificationRule


@dataclass(frozen=True)
class Classification:
    severity: str
    category: str
    type: str
    recoverability: str

    def as_record(self) -> dict[str, str]:
        return asdict(self)

    def header(self) -> str:
        return f"{self.severity}/{self.category}/{self.type}/{self.recoverability}"


FALLBACK = Classification("ERROR", "unknown", "unknown", "partially_recoverable")


def _matches(rule: ClassificationRule, kind: str, error_type: str, reported: str | None) -> bool:
    if rule.error_types and error_type not in rule.error_types:
        return False
    if rule.kinds and kind not in rule.kinds:
        return False
    return not (rule.reported_severities and (reported or "") not in rule.reported_severities)


def classify(
    rules: tuple[ClassificationRule, ...], *, kind: str, error_type: str,
    reported_severity: str | None = None,
) -> Classification:
    reported = reported_severity.upper() if reported_severity else None
    for rule in rules:
        if _matches(rule, kind, error_type, reported):
            severity = rule.severity
            if severity == "reported":
                severity = reported if reported in SEVERITIES else "ERROR"
            return Classification(severity, rule.category, rule.type, rule.recoverability)
    return FALLBACK
