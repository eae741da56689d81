"""Which dead letters a replay takes: filters as data, parsed from the command line and
compiled into one predicate. Pure functions, no Kafka.

Within one filter the values are alternatives (``--group a --group b``: either group);
different filters must all hold. Header values are compared with the last value of the
header, as ``app.headers.header_value`` reads it (a later hop's value wins)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from app.contracts import headers as h


class SelectionError(ValueError):
    """Input the user can fix (a bad time, a header filter without '=')."""


_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}
_RELATIVE = re.compile(r"^-((?:\d+[wdhms])+)$")
_PART = re.compile(r"(\d+)([wdhms])")


def parse_time(text: str, now_ms: int) -> int:
    """Milliseconds since the epoch for ``now``, a relative time before now (``-2h``,
    ``-30m``, ``-1d``, ``-1h30m``; units w d h m s) or ISO-8601 (``2024-05-01``,
    ``2024-05-01T12:00:00Z``, ``2024-05-01T14:00:00+02:00``; without a zone: UTC)."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    relative = _RELATIVE.match(value)
    if relative:
        return now_ms - sum(int(n) * _UNITS_MS[u] for n, u in _PART.findall(relative.group(1)))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            f"bad time {text!r}: use ISO-8601 (2024-05-01T12:00:00Z) or a relative time "
            "(-2h, -30m, -1d)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_header(text: str) -> tuple[str, str]:
    """``name=value`` (the value may be empty or contain '=')."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise SelectionError(f"bad header filter {text!r}: use NAME=VALUE")
    return name.strip(), value


@dataclass(frozen=True)
class Selection:
    topics: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    error_types: frozenset[str] = frozenset()
    keys: frozenset[bytes] = frozenset()
    headers: tuple[tuple[str, bytes], ...] = ()
    since_ms: int | None = None  # the dead letter's timestamp (when it was dead-lettered)
    until_ms: int | None = None  # exclusive

    @property
    def everything(self) -> bool:
        return not (self.topics or self.groups or self.error_types or self.keys
                    or self.headers or self.since_ms is not None or self.until_ms is not None)


def build_selection(*, topics: Iterable[str] = (), groups: Iterable[str] = (),
                    error_types: Iterable[str] = (), keys: Iterable[str] = (),
                    headers: Iterable[str] = (), since: str | None = None,
                    until: str | None = None, now_ms: int) -> Selection:
    """The selection the command line describes, with times resolved against ``now_ms``."""
    since_ms = parse_time(since, now_ms) if since else None
    until_ms = parse_time(until, now_ms) if until else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise SelectionError(f"empty time range: --since {since} is not before --until {until}")
    return Selection(
        topics=frozenset(topics), groups=frozenset(groups), error_types=frozenset(error_types),
        keys=frozenset(k.encode() for k in keys),
        headers=tuple((name, value.encode()) for name, value in map(parse_header, headers)),
        since_ms=since_ms, until_ms=until_ms)


# (key, headers as a dict holding each header's last value, timestamp in ms) -> selected?
Predicate = Callable[[bytes | None, Mapping[str, bytes | None], int], bool]


def compile_selection(selection: Selection) -> Predicate | None:
    """One predicate testing every filter, or None when the selection takes everything
    (so the replay loop skips the test altogether)."""
    if selection.everything:
        return None
    checks: list[Predicate] = []
    for header, wanted in ((h.ORIGINAL_TOPIC, selection.topics),
                           (h.CONSUMER_GROUP, selection.groups),
                           (h.ERROR_TYPE, selection.error_types)):
        if wanted:
            encoded = frozenset(w.encode() for w in wanted)
            checks.append(lambda _k, hs, _t, name=header, ok=encoded: hs.get(name) in ok)
    if selection.keys:
        checks.append(lambda key, _hs, _t, ok=selection.keys: key in ok)
    for name, value in selection.headers:
        checks.append(lambda _k, hs, _t, name=name, value=value: hs.get(name) == value)
    since, until = selection.since_ms, selection.until_ms
    if since is not None:
        checks.append(lambda _k, _hs, ts, since=since: ts >= since)
    if until is not None:
        checks.append(lambda _k, _hs, ts, until=until: ts < until)

    if len(checks) == 1:
        return checks[0]

    def selected(key: bytes | None, hs: Mapping[str, bytes | None], ts: int) -> bool:
        return all(check(key, hs, ts) for check in checks)

    return selected


def describe(selection: Selection) -> str:
    """One line for people: what the selection takes."""
    parts = []
    for label, values in (("topic", selection.topics), ("group", selection.groups),
                          ("error type", selection.error_types)):
        if values:
            parts.append(f"{label} " + "|".join(sorted(values)))
    if selection.keys:
        parts.append("key " + "|".join(sorted(k.decode(errors="replace") for k in selection.keys)))
    for name, value in selection.headers:
        parts.append(f"header {name}={value.decode(errors='replace')}")
    if selection.since_ms is not None:
        parts.append(f"since {iso(selection.since_ms)}")
    if selection.until_ms is not None:
        parts.append(f"until {iso(selection.until_ms)}")
    return ", ".join(parts) or "every dead letter"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
