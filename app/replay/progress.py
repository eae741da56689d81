"""How far a named replay has got: for each dead-letter partition the next offset to read and
the end offset fixed when the replay started, with running counts. Pure data and functions;
``app.replay.store`` keeps it in a compacted Kafka topic, keyed by the replay's name.

A replay covers the dead-letter topic as it was when it started (the end offsets then), so
running the same command again after Ctrl-C or a crash finishes that same set, and running it
once more after it is complete sends nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

RUNNING = "running"
INTERRUPTED = "interrupted"
FAILED = "failed"
DONE = "done"


class ProgressMismatch(ValueError):
    """A stored replay of this name was started with other options."""


def fingerprint(options: Mapping[str, Any]) -> str:
    """The same options, in any order, give the same fingerprint. Lists are sets here."""
    canonical = {k: sorted(v) if isinstance(v, list | tuple | set | frozenset) else v
                 for k, v in options.items()}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def default_name(options_fingerprint: str) -> str:
    return f"replay-{options_fingerprint[:12]}"


@dataclass(frozen=True)
class Progress:
    name: str
    fingerprint: str
    dlq_topic: str
    end: dict[int, int]
    next: dict[int, int]
    since_ms: int | None = None
    until_ms: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    scanned: int = 0
    matched: int = 0
    sent: int = 0
    unroutable: int = 0
    not_sent: int = 0
    state: str = RUNNING
    started_ms: int = 0
    updated_ms: int = 0

    @property
    def remaining(self) -> int:
        return sum(max(0, self.end[p] - self.next.get(p, self.end[p])) for p in self.end)

    @property
    def total(self) -> int:
        return self.remaining + self.scanned

    def to_read(self) -> dict[int, int]:
        """Partition -> next offset, for the partitions not read to their end yet."""
        return {p: off for p, off in sorted(self.next.items()) if off < self.end.get(p, 0)}

    def advanced(self, next_offsets: Mapping[int, int], *, scanned: int, matched: int,
                 sent: int, unroutable: int, not_sent: int, state: str,
                 now_ms: int) -> Progress:
        """This progress after a stretch of the run (counts are added)."""
        return replace(
            self, next={**self.next, **next_offsets}, scanned=self.scanned + scanned,
            matched=self.matched + matched, sent=self.sent + sent,
            unroutable=self.unroutable + unroutable, not_sent=self.not_sent + not_sent,
            state=state, updated_ms=now_ms)

    def to_json(self) -> bytes:
        data = {**self.__dict__,
                "end": {str(p): o for p, o in self.end.items()},
                "next": {str(p): o for p, o in self.next.items()}}
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> Progress:
        data = orjson.loads(raw)
        data["end"] = {int(p): int(o) for p, o in data["end"].items()}
        data["next"] = {int(p): int(o) for p, o in data["next"].items()}
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def start(name: str, options_fingerprint: str, options: dict[str, Any], dlq_topic: str, *,
          low: Mapping[int, int], high: Mapping[int, int], seek: Mapping[int, int] | None = None,
          since_ms: int | None = None, until_ms: int | None = None, now_ms: int) -> Progress:
    """A fresh replay over [low, high) of each partition, or from ``seek`` (the first offset
    at or after --since, by the broker's time index) where that is later."""
    first = {p: max(low.get(p, 0), (seek or {}).get(p, 0)) for p in high}
    return Progress(name=name, fingerprint=options_fingerprint, dlq_topic=dlq_topic,
                    end=dict(high), next={p: min(first[p], high[p]) for p in high},
                    since_ms=since_ms, until_ms=until_ms, options=options,
                    started_ms=now_ms, updated_ms=now_ms)


def resumable(stored: Progress | None, name: str, options_fingerprint: str) -> Progress | None:
    """The stored progress to go on from, None to start afresh; raises when the name was
    used for other options (going on would mix two different replays)."""
    if stored is None:
        return None
    if stored.fingerprint != options_fingerprint:
        raise ProgressMismatch(
            f"replay {name!r} was started with other options "
            f"({describe_options(stored.options)}); use another --name or --restart")
    return stored


def describe_options(options: Mapping[str, Any]) -> str:
    parts = []
    for k, v in sorted(options.items()):
        if v in (None, [], ()):
            continue
        parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list | tuple) else v}")
    return " ".join(parts) or "no options"
