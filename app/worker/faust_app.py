"""The worker's Faust app class: faust.App whose tables get bounded RocksDB options.

Its own module because mode gives every Service subclass a logger named after the module it
is defined in, with a NullHandler attached: defined in app/worker/app.py, that handler
swallowed the start-up lines logged there before Faust configures logging (the "schema
registry unavailable at start-up" line among them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import faust

log = logging.getLogger(__name__)

# Each table partition is its own RocksDB database. Faust's defaults give every one a 64 MB
# write buffer (three of them) and a 2 GB block cache, so with ten tables of twelve
# partitions the worker's memory had no useful bound: nothing is flushed to disk until a
# partition's buffer holds 64 MB. Small buffers flush early and bound what each database
# keeps in memory (docs/benchmarks/pipeline.md: peak RSS by backlog size).
TABLE_STORE_OPTIONS: dict[str, int] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 4 * 1024 * 1024,
}


# The changelog sends of the current batch (`changelog_sends`), per task.
_SENDS: ContextVar[list[Any] | None] = ContextVar("changelog-sends", default=None)


@contextmanager
def changelog_sends() -> Iterator[list[Any]]:
    """Collects the changelog records the tables send inside the block (Faust's
    FutureMessages, resolved when the broker acknowledges them), for the caller to await.

    Faust sends a table write to its changelog through a buffer and, before committing
    offsets, flushes that buffer; but the flush returns after 0.1 s without a send, with
    records still in the buffer (faust/transport/producer.py `flush_atmost`). So with a slow
    broker the input offsets could be committed before the table writes they caused were on
    the changelog, and a worker killed then left the incident on the changelog as it was
    before: the next owner of the partition restored it open, and the watchdog dead-lettered
    an incident already completed (the 100k fault runs' conflicting retry-path incidents).
    A batch that awaits its changelog records before it is acknowledged cannot be committed
    ahead of them."""
    sends: list[Any] = []
    token = _SENDS.set(sends)
    try:
        yield sends
    finally:
        _SENDS.reset(token)


def collect_send(future: Any) -> None:
    """Adds a changelog send to the enclosing `changelog_sends()`, if there is one."""
    sends = _SENDS.get()
    if sends is not None:
        sends.append(future)


class FencedTable(faust.Table):
    """faust.Table whose changelog sends inside `changelog_sends()` are collected."""

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        collect_send(future)
        return future


class RecoveryFaustApp(faust.App):
    """faust.App whose tables, wherever they are declared, get TABLE_STORE_OPTIONS, and are
    FencedTables; and with timers that run from the app's start (`early_timer`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("Table", FencedTable)
        super().__init__(*args, **kwargs)
        self._early: list[tuple[float, Callable[[], Awaitable[None]]]] = []

    def early_timer(self, interval_s: float) -> Callable[[Callable[[], Awaitable[None]]],
                                                         Callable[[], Awaitable[None]]]:
        """A timer started with the app itself. Faust's own timers start only once the first
        assignment's tables are restored, so they never run for a worker that gets no
        assignment at all; what watches for that must not be one of them."""

        def register(fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            self._early.append((interval_s, fun))
            return fun

        return register

    async def on_start(self) -> None:
        await super().on_start()
        for interval_s, fun in self._early:
            self.add_future(self._every(interval_s, fun))

    async def _every(self, interval_s: float, fun: Callable[[], Awaitable[None]]) -> None:
        while not self.should_stop:
            await self.sleep(interval_s)
            if self.should_stop:
                return
            try:
                await fun()
            except Exception:  # the next tick runs again
                log.exception("%s failed", fun.__qualname__)

    def Table(self, name: str, **kwargs: Any) -> Any:  # noqa: N802 (Faust's name)
        kwargs.setdefault("options", dict(TABLE_STORE_OPTIONS))  # Faust pops from it
        return super().Table(name, **kwargs)

    def GlobalTable(self, name: str, **kwargs: Any) -> Any:  # noqa: N802 (Faust's name)
        kwargs.setdefault("options", dict(TABLE_STORE_OPTIONS))
        return super().GlobalTable(name, **kwargs)


