"""Deadline watches on the wire: the single-partition topic `recovery.watches` carries JSON
records `{"op": "start", "watch": {...}}`, `{"op": "resolve", "watch_id": ..., "result":
{...}}` and `{"op": "check", "watch_id": ...}`. Clients answer a request by producing the
`resolve` record (app/scenarios/shared/watches.py keeps the watches)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from app.contracts.topics import WATCHES as TOPIC

__all__ = ["TOPIC", "Watch", "resolve_record", "start_record"]


@dataclass(frozen=True)
class Watch:
    watch_id: str
    kind: str  # which scenario handler owns it
    incident_id: str
    started_ms: int
    deadline_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Watch:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def start_record(watch: Watch) -> bytes:
    return orjson.dumps({"op": "start", "watch": watch.to_json()})


def resolve_record(watch_id: str, result: dict[str, Any]) -> bytes:
    return orjson.dumps({"op": "resolve", "watch_id": watch_id, "result": result})
