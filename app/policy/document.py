"""The policy data as one document: app/policy/defaults.toml (from the source document),
overridden by the file named in RECOVERY_POLICY_FILE. Read once; every policy module parses
its part of it (classification rules and retry schedules in rules.py, the scenarios'
routing in routing.py, cache/partition/coordination in state.py).

Overrides: classification rules of the override come first (they win), retry schedules are
replaced by name, `[scenario.*]` tables merge key by key (tables merged, values replaced)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS = Path(__file__).with_name("defaults.toml")


class PolicyError(ValueError):
    """Policy data that cannot be used; the message names where and why."""


@dataclass(frozen=True)
class PolicyDocument:
    base: dict[str, Any]
    extra: dict[str, Any]
    override: Path | None = None

    @property
    def scenario(self) -> dict[str, Any]:
        """The merged `[scenario]` tables."""
        return merge(self.base.get("scenario", {}), self.extra.get("scenario", {}))


def read_document(override: Path | None = None) -> PolicyDocument:
    base = tomllib.loads(DEFAULTS.read_text())
    extra: dict[str, Any] = {}
    if override is not None:
        try:
            extra = tomllib.loads(override.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{override}: {exc}") from exc
    return PolicyDocument(base, extra, override)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_keys(entry: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown settings {sorted(unknown)}")
