"""Resolving conflicting versions of one key: the source's `resolveVersionConflict`
(Scenario 5, cache against database), reused for the sides of a healed network partition
(Scenario 6). Pure and deterministic: the same versions and strategy always give the same
resolution, whatever order the versions arrive in.

Strategies (chosen by policy data, `[scenario.cache]` / `[scenario.partition]`):

- `last_write_wins`: the version written last (`updated_at_ms`), then the higher version
  number, then the source named first by the caller (the database for a cache conflict);
- `use_<source>_version`: always that source's version (`use_database_version`,
  `use_cache_version`, or a partition side's name: `use_primary_version`);
- `merge_versions`: field by field over JSON objects, oldest write first so a later write's
  field wins; a field only one version has is kept; nested objects merge the same way.
  Values that are not all objects cannot be merged field by field: manual resolution;
- `manual_resolution_required`: nobody decides automatically.

The resolution's `action` is the source's name for what to do: `use_<source>_version`,
`merge_versions` or `manual_resolution_required`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.contracts.values import canonical, checksum
from app.policy.state import (
    FIXED_STRATEGIES,
    LAST_WRITE_WINS,
    MANUAL,
    MERGE,
    USE_SOURCE,
    UnknownStrategy,
    check_strategy,
)

__all__ = ["FIXED_STRATEGIES", "LAST_WRITE_WINS", "MANUAL", "MERGE", "USE_SOURCE",
           "Resolution", "UnknownStrategy", "Version", "canonical", "check_strategy",
           "checksum", "resolve"]

@dataclass(frozen=True)
class Version:
    source: str  # "cache", "database", or a partition side
    value: Any  # decoded JSON; None for "absent"
    version: int = 0
    updated_at_ms: int | None = None


@dataclass(frozen=True)
class Resolution:
    action: str
    strategy: str
    value: Any = None
    version: int | None = None
    chosen: str | None = None  # the winning source; "merged" for a merge; None if manual
    reason: str = ""

    @property
    def manual(self) -> bool:
        return self.action == MANUAL

    def as_record(self) -> dict[str, Any]:
        return {"action": self.action, "strategy": self.strategy, "chosen": self.chosen,
                "version": self.version, "value": self.value, "reason": self.reason}


def same_value(a: Any, b: Any) -> bool:
    return canonical(a) == canonical(b)


def in_conflict(versions: Sequence[Version]) -> bool:
    """Two or more versions whose values differ (equal values under different version
    numbers are not a conflict of data)."""
    values = {canonical(v.value) for v in versions}
    return len(versions) > 1 and len(values) > 1


def _write_order(versions: Sequence[Version]) -> list[Version]:
    """Oldest write first; ties by version number, then the caller's order (first named
    wins a tie, so it comes last)."""
    indexed = list(enumerate(versions))
    indexed.sort(key=lambda iv: (iv[1].updated_at_ms if iv[1].updated_at_ms is not None
                                 else -1, iv[1].version, -iv[0]))
    return [v for _, v in indexed]


def merge_values(older_first: Sequence[Any]) -> Any:
    """Field-level merge of JSON objects, later ones winning per field."""
    merged: dict[str, Any] = {}
    for value in older_first:
        for field, item in value.items():
            if isinstance(item, dict) and isinstance(merged.get(field), dict):
                merged[field] = merge_values([merged[field], item])
            else:
                merged[field] = item
    return merged


def resolve(versions: Sequence[Version], strategy: str) -> Resolution:
    """`versions` in the caller's order of preference for ties (database before cache)."""
    check_strategy(strategy)
    if not versions:
        raise ValueError("nothing to resolve: no versions")
    newest_version = max(v.version for v in versions)

    def version_of(winner: Version) -> int:
        # A winner that is not already the highest version is written as a new one.
        others = [v.version for v in versions if v is not winner]
        return winner.version if all(winner.version > o for o in others) \
            else newest_version + 1

    if strategy == MANUAL:
        return Resolution(MANUAL, strategy, reason="configured for manual resolution")
    if strategy == LAST_WRITE_WINS:
        winner = _write_order(versions)[-1]
        return Resolution(f"use_{winner.source}_version", strategy, winner.value,
                          version_of(winner), winner.source,
                          reason="written last" if winner.updated_at_ms is not None
                          else "no write times: highest version")
    if strategy == MERGE:
        ordered = _write_order(versions)
        if not all(isinstance(v.value, dict) for v in ordered):
            return Resolution(MANUAL, strategy,
                              reason="values are not all JSON objects: no field-level merge")
        return Resolution(MERGE, strategy, merge_values([v.value for v in ordered]),
                          newest_version + 1, "merged", reason="field-level merge")
    wanted = USE_SOURCE.match(strategy).group("source")  # type: ignore[union-attr]
    for candidate in versions:
        if candidate.source == wanted:
            return Resolution(strategy, strategy, candidate.value,
                              version_of(candidate), wanted,
                              reason=f"configured to prefer {wanted}")
    return Resolution(MANUAL, strategy, reason=f"no {wanted} version to prefer")
