"""The agents' batch loop: records taken from a Faust stream in bounded batches
(`take_events`), each handed to a pipeline stage in order, the batch's outputs delivered
through the output producer, and only then the batch acknowledged.

Faust's `take_events` acknowledges a batch when its loop body is left, however it is left,
so the body must not be left before the batch is done:
- a record whose handling raises is quarantined to the poison topic with the error as its
  reason, and the batch goes on (nothing is lost, the worker is not stopped by one record);
- a stop (the agent cancelled) lets the batch in hand finish within `finish_bound_s`; if it
  cannot (no broker answering), the process exits at once, before Faust can commit offsets
  whose outputs were never acknowledged; the next worker redoes the batch;
- the table writes the batch made are on their changelogs before it is acknowledged
  (app/worker/faust_app.py `changelog_sends`); a changelog send that fails, or is not
  acknowledged within `changelog_bound_s`, makes the process exit at once, before the
  offsets can be committed: the local table is then ahead of its changelog, and the next
  start restores it from the changelog (app/worker/table_state.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from contextvars import ContextVar
from typing import Any, Protocol

from faust.streams import _current_event
from faust.types import EventT, StreamT

from app.contracts.records import RawRecord
from app.kafka.outputs import OutputProducer
from app.worker.faust_app import changelog_sends

log = logging.getLogger(__name__)

EXIT_BATCH_UNFINISHED = 3  # the same code as a shutdown past its deadline
CHANGELOG_REPORT_S = 10.0  # how often a wait for the changelog is reported
RecordHandler = Callable[[RawRecord], Awaitable[None]]
Quarantine = Callable[[RawRecord, str], Awaitable[None]]
Handled = list[tuple[str, int, int]]  # (topic, partition, offset) of records handled
# The records handled in the batch being run (set by BatchRunner.each, filled by its guard,
# records read again from Kafka included).
batch_handled: ContextVar[Handled | None] = ContextVar("batch_handled", default=None)


def message_record(message: Any) -> RawRecord:
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        key=message.key,
        value=message.value,
        headers=list(message.headers or []),
    )


def set_current_event(event: EventT) -> None:
    """Makes `event` Faust's current event in this task only: table writes (their changelog
    partition) and the lifecycle counts belong to the record being handled. Only the context
    variable is set: the stream's own `current_event` attribute is the take buffer's, which
    fills it from another task."""
    _current_event.set(weakref.ref(event))


def send_failure(future: asyncio.Future[Any]) -> BaseException | None:
    """What a settled send failed with (a cancelled one too), or None."""
    if future.cancelled():
        return asyncio.CancelledError("the send was cancelled")
    return future.exception()


class HeldWrites(Protocol):
    """A table whose writes can be held back until the batch's outputs are on the broker
    (app/worker/open_incidents.py)."""

    def held_writes(self) -> AbstractContextManager[Callable[[], None]]: ...


class BatchRunner:
    def __init__(self, outputs: OutputProducer, quarantine: Quarantine, *,
                 size: int, wait_s: float, finish_bound_s: float = 10.0,
                 changelog_bound_s: float = 300.0,
                 exit: Callable[[int], None] = os._exit,
                 held: Sequence[HeldWrites] = (),
                 on_handled: Callable[[Handled], None] | None = None):
        self.outputs = outputs
        self.held = held  # their writes reach the table after the batch's outputs
        self.quarantine = quarantine
        self.size = size
        self.wait_s = wait_s
        self.finish_bound_s = finish_bound_s
        self.changelog_bound_s = changelog_bound_s
        self._exit = exit
        # Told, once a batch is done (outputs and changelog writes on the broker), which
        # records it handled: the commit fence (app/worker/commit_fence.py).
        self.on_handled = on_handled

    async def run(self, stream: StreamT, handle: Callable[[Sequence[EventT]], Awaitable[None]]
                  ) -> None:
        """Feeds the stream's batches to `handle`, one at a time."""
        async for events in stream.take_events(self.size, self.wait_s):
            task = asyncio.ensure_future(handle(events))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await self._finish(task, len(events))
                raise

    async def _finish(self, task: asyncio.Future[None], size: int) -> None:
        done, _ = await asyncio.wait({task}, timeout=self.finish_bound_s)
        if done and task.exception() is None:
            return
        self._leave(f"stopping with a batch of {size} record(s) not finished within "
                    f"{self.finish_bound_s:.0f} s", "the next worker redoes it")

    async def each(self, events: Sequence[EventT], handler: RecordHandler,
                   after: Callable[[], None] | None = None,
                   order: Callable[[list[RawRecord]], list[int]] | None = None) -> None:
        """Hands the batch's records to `handler` in order (so per key and partition, order
        is kept; `order` may interleave partitions), waits until every output they caused
        is acknowledged, only then writes the held-back table writes, and returns once every
        table write of the batch is on its changelog; then tells `on_handled` which records
        the batch handled."""
        records = [message_record(event.message) for event in events]
        indices = order(records) if order is not None else range(len(records))
        handled: Handled = []
        token = batch_handled.set(handled)
        try:
            await self._each(events, records, indices, handler, after)
        finally:
            batch_handled.reset(token)
        if self.on_handled is not None:
            self.on_handled(handled)

    async def _each(self, events: Sequence[EventT], records: list[RawRecord],
                    indices: Sequence[int], handler: RecordHandler,
                    after: Callable[[], None] | None) -> None:
        with self.outputs.batch() as group, ExitStack() as stack, changelog_sends() as sends:
            applies = [stack.enter_context(table.held_writes()) for table in self.held]
            for index in indices:
                set_current_event(events[index])
                await handler(records[index])
                if after is not None:
                    after()
            await self.outputs.deliver(group)
            for apply in applies:
                apply()
        await self.on_changelogs(sends, len(events))

    async def on_changelogs(self, sends: Sequence[asyncio.Future[Any]], size: int) -> None:
        """Returns once every changelog record of the batch is acknowledged; exits the
        process when one fails or the wait passes `changelog_bound_s` (reported every
        CHANGELOG_REPORT_S while it lasts)."""
        pending = {future for future in sends if not future.done()}
        waited = 0.0
        while pending:
            step = min(CHANGELOG_REPORT_S, self.changelog_bound_s - waited)
            if step <= 0:
                self._leave(f"{len(pending)} changelog write(s) of a batch of {size} "
                            f"record(s) not acknowledged within {self.changelog_bound_s:.0f} s")
                return
            _, pending = await asyncio.wait(pending, timeout=step)
            waited += step
            if pending:
                log.warning("%d changelog write(s) of a batch of %d record(s) not acknowledged "
                            "after %.0f s; the batch stays unacknowledged", len(pending), size,
                            waited)
        failed = [failure for future in sends if (failure := send_failure(future)) is not None]
        if failed:
            self._leave(f"{len(failed)} changelog write(s) of a batch of {size} record(s) "
                        f"failed (first: {failed[0]!r})")

    def _leave(self, why: str, then: str = "the table is restored from its changelog at "
                                             "the next start") -> None:
        log.error("%s: exiting before the batch's offsets can be committed; %s", why, then)
        logging.shutdown()
        self._exit(EXIT_BATCH_UNFINISHED)

    def guard(self, handler: RecordHandler) -> RecordHandler:
        """`handler`, with a record whose handling raises quarantined instead."""

        async def guarded(record: RawRecord) -> None:
            try:
                await handler(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s[%d]@%d could not be handled; quarantined", record.topic,
                              record.partition, record.offset)
                await self.quarantine(record, f"the worker could not handle it: "
                                              f"{type(exc).__name__}: {exc}")
            handled = batch_handled.get()
            if handled is not None:
                handled.append((record.topic, record.partition, record.offset))

        return guarded
