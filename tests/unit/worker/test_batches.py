"""The agents' batch loop: records handled in order, the batch's outputs delivered, and only
then the incident table's writes (app/worker/batches.py, app/worker/open_incidents.py)."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from app.worker.batches import BatchRunner
from app.worker.open_incidents import IndexedIncidents


class Outputs:
    """Records when the batch's outputs are delivered, and what the table held then."""

    def __init__(self, table: dict, log: list) -> None:
        self.table, self.log = table, log

    @contextmanager
    def batch(self):
        yield object()

    async def deliver(self, group: object) -> None:
        self.log.append(("delivered", dict(self.table)))


class Event:
    def __init__(self, message: SimpleNamespace) -> None:
        self.message = message


def event(offset: int) -> Event:
    return Event(SimpleNamespace(topic="recovery.incident-commands", partition=0,
                                 offset=offset, timestamp=None, key=b"i", value=b"",
                                 headers=[]))


def runner(table: dict, log: list) -> tuple[BatchRunner, IndexedIncidents]:
    incidents = IndexedIncidents(table, lambda: 1, lambda: True)

    async def quarantine(record, reason: str) -> None:
        log.append(("quarantined", record.offset, reason))

    return BatchRunner(Outputs(table, log), quarantine, size=10, wait_s=0.01,
                       held=[incidents]), incidents


def test_the_table_is_written_after_the_outputs_are_on_the_broker():
    table: dict = {}
    log: list = []
    batch, incidents = runner(table, log)

    async def handle(record) -> None:
        previous = incidents.get("i") or {"steps": []}
        incidents["i"] = {"state": "completed", "steps": previous["steps"] + [record.offset]}

    asyncio.run(batch.each([event(5), event(6)], handle))
    assert log == [("delivered", {})]  # the table was still empty when the outputs went
    assert table == {"i": {"state": "completed", "steps": [5, 6]}}  # read its own writes


def test_a_batch_whose_outputs_fail_leaves_the_table_as_it_was():
    table: dict = {"i": {"state": "retrying"}}
    log: list = []
    batch, incidents = runner(table, log)

    async def fail(group: object) -> None:
        raise RuntimeError("no broker")

    batch.outputs.deliver = fail  # type: ignore[method-assign]

    async def handle(record) -> None:
        incidents["i"] = {"state": "completed"}

    with pytest.raises(RuntimeError):
        asyncio.run(batch.each([event(5)], handle))
    assert table == {"i": {"state": "retrying"}}
