"""Which strategy makes an oversized payload fit: decisions as pure functions over policy data.

The order is the source document's (Scenario 3, handleMessageTooLarge): compression, then
fragmentation, then an external-storage reference (claim check). Per topic a strategy can be
forced (only it is tried) or disabled, and the limit and codecs can be set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.oversize.codecs import CODECS
from app.oversize.headers import COMPRESSION, EXTERNAL_STORAGE, FRAGMENTATION, STRATEGIES
from app.policy.document import PolicyError

# Batch header (61 bytes) and one record's framing (varints, attributes), rounded up.
RECORD_OVERHEAD = 128
HEADER_OVERHEAD = 12
# A codec whose estimate (from a sample) is above limit * this is not tried on the whole.
ESTIMATE_SLACK = 1.25
# Fragments carry the compressed bytes only when compression saves at least this much.
WORTH_COMPRESSING = 0.9
DEFAULT_MAX_FRAGMENTED_BYTES = 1 << 30


@dataclass(frozen=True)
class TopicPolicy:
    force: str | None = None
    disabled: frozenset[str] = frozenset()
    codecs: tuple[str, ...] = CODECS
    # Overrides the limit read from the topic's max.message.bytes.
    max_message_bytes: int | None = None
    # Fragmentation gives way to the object store above this size.
    max_fragmented_bytes: int = DEFAULT_MAX_FRAGMENTED_BYTES

    def candidates(self) -> tuple[str, ...]:
        if self.force:
            return (self.force,)
        return tuple(s for s in STRATEGIES if s not in self.disabled)


def topic_policy(topic: str, configured: Mapping[str, Mapping[str, Any]] | None) -> TopicPolicy:
    """The policy for a topic from the settings' per-topic map ("*" applies to all topics
    not named)."""
    configured = configured or {}
    raw = configured.get(topic, configured.get("*", {}))
    return parse_policy(raw, where=topic)


def parse_policy(raw: Mapping[str, Any], where: str = "") -> TopicPolicy:
    known = {"force", "disable", "codecs", "max_message_bytes", "max_fragmented_bytes"}
    unknown = set(raw) - known
    if unknown:
        raise PolicyError(f"oversize policy for {where!r}: unknown keys {sorted(unknown)} "
                          f"(known: {sorted(known)})")
    force = raw.get("force")
    if force is not None and force not in STRATEGIES:
        raise PolicyError(f"oversize policy for {where!r}: force={force!r} is not one of "
                          f"{', '.join(STRATEGIES)}")
    disabled = frozenset(_names(raw.get("disable", ()), STRATEGIES, where, "disable"))
    if force and force in disabled:
        raise PolicyError(f"oversize policy for {where!r}: {force} is both forced and disabled")
    codecs = tuple(_names(raw.get("codecs", CODECS), CODECS, where, "codecs"))
    limit = raw.get("max_message_bytes")
    if limit is not None and int(limit) <= RECORD_OVERHEAD:
        raise PolicyError(f"oversize policy for {where!r}: max_message_bytes={limit} is too small")
    return TopicPolicy(force=force, disabled=disabled, codecs=codecs,
                       max_message_bytes=int(limit) if limit is not None else None,
                       max_fragmented_bytes=int(raw.get("max_fragmented_bytes",
                                                        DEFAULT_MAX_FRAGMENTED_BYTES)))


def _names(values: Iterable[str] | str, allowed: tuple[str, ...], where: str,
           what: str) -> list[str]:
    names = [values] if isinstance(values, str) else list(values)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise PolicyError(f"oversize policy for {where!r}: {what} {bad} not in {list(allowed)}")
    return names


def headers_size(headers: Iterable[tuple[str, bytes | None]]) -> int:
    return sum(len(k.encode()) + len(v or b"") + HEADER_OVERHEAD for k, v in headers)


def record_size(key: bytes | None, value_size: int,
                headers: Iterable[tuple[str, bytes | None]]) -> int:
    """Upper bound of a record's size in a batch of its own, as the broker counts it."""
    return RECORD_OVERHEAD + len(key or b"") + value_size + headers_size(headers)


def effective_limit(topic_limit: int | None, producer_limit: int, policy: TopicPolicy) -> int:
    """The size a record must fit: the topic's (or the configured) limit, and never more
    than the producer itself sends."""
    limit = policy.max_message_bytes or topic_limit or producer_limit
    return min(limit, producer_limit)


def is_oversized(size: int, limit: int) -> bool:
    return size > limit


def must_transform(record_bytes: int, limit: int, policy: TopicPolicy) -> bool:
    """A record is sent as it is unless it does not fit or a strategy is forced."""
    return policy.force is not None or is_oversized(record_bytes, limit)


def codec_worth_trying(estimate: int, budget: int, policy: TopicPolicy) -> bool:
    """Whether a codec whose output is estimated (from a sample) at `estimate` bytes might
    fit `budget`; when compression is forced, every codec is tried."""
    return policy.force == COMPRESSION or estimate <= budget * ESTIMATE_SLACK


def worth_compressing_whole(original_size: int, compressed_size: int) -> bool:
    return compressed_size <= original_size * WORTH_COMPRESSING


@dataclass(frozen=True)
class Layout:
    chunk: int  # bytes of the whole per fragment (the last one may carry fewer)
    count: int


@dataclass(frozen=True)
class NoLayout:
    reason: str


def fragment_layout(whole_size: int, limit: int, per_fragment_overhead: int,
                    policy: TopicPolicy) -> Layout | NoLayout:
    """How to cut `whole_size` bytes so that every fragment, headers included, fits."""
    if whole_size > policy.max_fragmented_bytes:
        return NoLayout(f"{whole_size} bytes exceed max_fragmented_bytes "
                        f"{policy.max_fragmented_bytes}")
    chunk = limit - per_fragment_overhead
    if chunk < 1024:
        return NoLayout(f"a fragment's headers ({per_fragment_overhead} bytes) leave no room "
                        f"under the limit of {limit} bytes")
    count = max(1, -(-whole_size // chunk))
    return Layout(chunk, count)


@dataclass(frozen=True)
class Attempt:
    strategy: str
    outcome: str  # "used", or why it did not apply

    def __str__(self) -> str:
        return f"{self.strategy} ({self.outcome})"


@dataclass
class Attempts:
    items: list[Attempt] = field(default_factory=list)

    def add(self, strategy: str, outcome: str) -> None:
        self.items.append(Attempt(strategy, outcome))

    def names(self) -> list[str]:
        return [a.strategy for a in self.items]


__all__ = ["COMPRESSION", "EXTERNAL_STORAGE", "FRAGMENTATION", "Attempt", "Attempts", "Layout",
           "NoLayout", "PolicyError", "TopicPolicy", "codec_worth_trying", "effective_limit",
           "fragment_layout", "must_transform", "parse_policy", "record_size", "topic_policy",
           "worth_compressing_whole"]
