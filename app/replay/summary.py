"""What a replay would send (``--dry-run``) or sent: counts per original topic, consumer
group, error type and target, as a plain table that reads well in a terminal and in a pipe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from app.contracts import headers as h

Row = tuple[str, str, str, str]  # original topic, consumer group, error type, target
COLUMNS = ("original topic", "consumer group", "error type", "target", "records")
UNKNOWN = "-"


def row_of(hs: Mapping[str, bytes | None], target: str | None) -> Row:
    def text(name: str) -> str:
        value = hs.get(name)
        return value.decode(errors="replace") if value else UNKNOWN

    return (text(h.ORIGINAL_TOPIC), text(h.CONSUMER_GROUP), text(h.ERROR_TYPE),
            target or "(unroutable)")


def table(counts: Counter[Row], missing: frozenset[str] = frozenset()) -> list[str]:
    """Rows by count (largest first), then a total line. A target the cluster does not have
    is marked, as nothing would be sent there."""
    rows = [(*row[:3], f"{row[3]} (missing)" if row[3] in missing else row[3], str(n))
            for row, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    rows.append(("total", "", "", "", str(sum(counts.values()))))
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, cells[-1].rjust(widths[-1])]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(COLUMNS), rule, *map(line, rows[:-1]), rule, line(rows[-1])]
