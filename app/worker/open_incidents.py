"""The incidents table with an index of its open incidents, for the watchdog's scan.

Terminal incidents stay in the table (a repeated failure event must find its incident
closed), so the table only grows. The watchdog looked at every entry each interval: in a
100,000-event fault run its scan took 1-4 s of the event loop each second, and it grows
with every incident the service has ever seen. The open ones are few; this keeps them.

The index follows every write made through it (the pipeline's writes). Writes it does not
see, Faust's restore of a table from its changelog, come with a rebalance or a recovery, so
the index is built again from the table on the first scan after a new consumer generation,
and never while the worker rebalances or restores (the scan reads the table then, as
before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from app.pipeline.decide import TERMINAL


def is_open(value: Any) -> bool:
    """As Incident.terminal reads the stored state; an empty entry is no incident."""
    return bool(value) and value.get("state", "open") not in TERMINAL


class IndexedIncidents(MutableMapping[str, Any]):
    """A mapping over the Faust table; `open_items()` is the watchdog's view."""

    def __init__(self, table: MutableMapping[str, Any], generation: Callable[[], int],
                 settled: Callable[[], bool]) -> None:
        self.table = table
        self.generation = generation  # the consumer generation (a new one: new partitions)
        self.settled = settled  # neither rebalancing nor restoring tables
        self.built_for: int | None = None  # the generation the index holds
        self.open: dict[str, Any] = {}
        self.rebuilds = 0

    def __getitem__(self, key: str) -> Any:
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[key] = value
        if self.built_for is not None:
            if is_open(value):
                self.open[key] = value
            else:
                self.open.pop(key, None)

    def __delitem__(self, key: str) -> None:
        del self.table[key]
        self.open.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def open_items(self) -> list[tuple[str, Any]]:
        """The open incidents of the partitions this worker holds."""
        if not self.settled():
            self.built_for = None  # whatever is restored now, the index has not seen
            return [(k, v) for k, v in list(self.table.items()) if is_open(v)]
        generation = self.generation()
        if self.built_for != generation:
            self.open = {k: v for k, v in list(self.table.items()) if is_open(v)}
            self.built_for = generation
            self.rebuilds += 1
        return list(self.open.items())
