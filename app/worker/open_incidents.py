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

Writes made while a batch is handled are held back (`held_writes`) and reach the table, so
its changelog, only after every output of the batch is on the broker. A Faust table write
goes to the changelog at once, on Faust's own producer; had an incident's changelog record
("completed") reached the broker before the lifecycle event it stood for, a worker killed in
between left a replacement that read the incident as finished and dropped the acknowledgement
it handled again: the retry-path kill test lost 1 to 7 of 300 incidents that way. Held back,
a crash costs the writes and the outputs together (or only the writes, and the record is
decided again with the same ids). Inside the batch, reads see its own writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from faust.streams import _current_event

from app.pipeline.decide import TERMINAL

_DELETED = object()  # a held-back deletion


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
        # Writes held back while a batch is handled, key -> (value, the record's event); per
        # task, so one agent's batch never applies or drops another's.
        self._held: ContextVar[dict[str, tuple[Any, Any]] | None] = ContextVar(
            f"held-incident-writes-{id(self)}", default=None)

    def __getitem__(self, key: str) -> Any:
        held = self._held.get()
        if held is not None and key in held:
            value = held[key][0]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        held = self._held.get()
        if held is not None:
            held[key] = (value, _current_event.get(None))
            return
        self._write(key, value)

    def __delitem__(self, key: str) -> None:
        held = self._held.get()
        if held is not None:
            self[key]  # noqa: B018 (a KeyError for a key that is not there, as dict does)
            held[key] = (_DELETED, _current_event.get(None))
            return
        del self.table[key]
        self.open.pop(key, None)

    def _write(self, key: str, value: Any) -> None:
        self.table[key] = value
        if self.built_for is not None:
            if is_open(value):
                self.open[key] = value
            else:
                self.open.pop(key, None)

    @contextmanager
    def held_writes(self) -> Iterator[Callable[[], None]]:
        """Holds the writes made inside back; the function it yields writes them to the
        table, each as the record that made it (Faust picks the changelog partition by the
        current event). Writes not applied when the block is left are dropped: the batch
        did not finish, and its records are handled again."""
        held: dict[str, tuple[Any, Any]] = {}
        token = self._held.set(held)

        def apply() -> None:
            writes = list(held.items())
            held.clear()
            event = _current_event.get(None)
            try:
                for key, (value, made_by) in writes:
                    if made_by is not None:
                        _current_event.set(made_by)
                    if value is _DELETED:
                        self.table.pop(key, None)
                        self.open.pop(key, None)
                    else:
                        self._write(key, value)
            finally:
                _current_event.set(event)

        try:
            yield apply
        finally:
            self._held.reset(token)

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
