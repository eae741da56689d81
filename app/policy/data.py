"""The `[scenario.*]` tables of the policy data: app/policies/defaults.toml, overridden
key by key (tables merged, values replaced) by the file named in RECOVERY_POLICY_FILE.
Each scenario's policy module reads its own table from here and checks it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from app.policy.rules import DEFAULTS, PolicyError


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def scenario_tables(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return merge(base.get("scenario", {}), extra.get("scenario", {}))


def load_scenario_tables(override: Path | None = None) -> dict[str, Any]:
    base = tomllib.loads(DEFAULTS.read_text())
    extra: dict[str, Any] = {}
    if override is not None:
        try:
            extra = tomllib.loads(override.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{override}: {exc}") from exc
    return scenario_tables(base, extra)


def check_keys(entry: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(entry) - known
    if unknown:
        raise PolicyError(f"{where}: unknown settings {sorted(unknown)}")
