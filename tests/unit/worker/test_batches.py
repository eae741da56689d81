"""The agents' batch loop: records handled in order, the batch's outputs delivered, and only
then the incident table's writes (app/worker/batches.py, app/worker/open_incidents.py)."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from app.worker.batches import EXIT_BATCH_UNFINISHED, BatchRunner
from app.worker.faust_app import FencedTable, changelog_sends, collect_send
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


class ChangelogTable(dict):
    """A table whose every write is a changelog send the test settles by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[asyncio.Future] = []

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        future = asyncio.get_running_loop().create_future()
        self.sends.append(future)
        collect_send(future)


def changelog_runner(bound_s: float = 300.0):
    table = ChangelogTable()
    exits: list[int] = []
    batch, incidents = runner(table, [])
    batch.changelog_bound_s = bound_s
    batch._exit = exits.append  # type: ignore[method-assign]

    async def handle(record) -> None:
        incidents[f"i{record.offset}"] = {"state": "completed"}

    return batch, table, exits, handle


def test_a_batch_returns_only_once_its_changelog_writes_are_acknowledged():
    batch, table, exits, handle = changelog_runner()

    async def scenario() -> list[bool]:
        task = asyncio.ensure_future(batch.each([event(5), event(6)], handle))
        for _ in range(20):
            await asyncio.sleep(0)
        states = [task.done(), len(table.sends) == 2]
        table.sends[0].set_result(None)
        for _ in range(20):
            await asyncio.sleep(0)
        states.append(task.done())  # one of two acknowledged: still waiting
        table.sends[1].set_result(None)
        await asyncio.wait_for(task, 1)
        return states

    assert asyncio.run(scenario()) == [False, True, False]
    assert exits == []


def test_a_failed_changelog_write_exits_before_the_batch_is_acknowledged():
    batch, table, exits, handle = changelog_runner()

    async def scenario() -> None:
        task = asyncio.ensure_future(batch.each([event(5)], handle))
        while not table.sends:
            await asyncio.sleep(0)
        table.sends[0].set_exception(RuntimeError("NOT_ENOUGH_REPLICAS"))
        await asyncio.wait_for(task, 1)

    asyncio.run(scenario())
    assert exits == [EXIT_BATCH_UNFINISHED]


def test_a_changelog_write_unacknowledged_past_the_bound_exits():
    batch, table, exits, handle = changelog_runner(bound_s=0.05)
    asyncio.run(batch.each([event(5)], handle))
    assert len(table.sends) == 1 and not table.sends[0].done()
    assert exits == [EXIT_BATCH_UNFINISHED]


def test_changelog_sends_outside_a_batch_are_not_collected():
    async def scenario() -> list:
        with changelog_sends() as sends:
            collect_send("inside")
        collect_send("after")
        return sends

    assert asyncio.run(scenario()) == ["inside"]


def test_the_faust_table_collects_its_changelog_sends(monkeypatch):
    import faust

    monkeypatch.setattr(faust.Table, "send_changelog", lambda self, *a, **k: ("sent", a))
    table = object.__new__(FencedTable)
    with changelog_sends() as sends:
        assert table.send_changelog(3, b"k", b"v") == ("sent", (3, b"k", b"v"))
    assert sends == [("sent", (3, b"k", b"v"))]


def test_the_fence_hears_of_every_record_the_batch_handled_once_it_is_done():
    table: dict = {}
    log: list = []
    batch, _ = runner(table, log)
    heard: list = []
    batch.on_handled = lambda records: heard.append((list(records), len(log)))

    async def handle(record) -> None:
        if record.offset == 6:
            raise ValueError("bad bytes")

    guarded = batch.guard(handle)

    async def with_one_read_again(record) -> None:
        if record.offset == 7:  # offset 4 never reached the agent: read again first
            await guarded(SimpleNamespace(**{**vars(record), "offset": 4}))
        await guarded(record)

    asyncio.run(batch.each([event(5), event(6), event(7)], with_one_read_again))
    # Quarantined (6) and read again (4) count as handled; told after the delivery.
    assert heard == [([("recovery.incident-commands", 0, o) for o in (5, 6, 4, 7)], 2)]


def test_a_batch_that_fails_tells_the_fence_nothing():
    batch, _ = runner({}, [])
    heard: list = []
    batch.on_handled = heard.append

    async def fail(group: object) -> None:
        raise RuntimeError("no broker")

    batch.outputs.deliver = fail  # type: ignore[method-assign]

    async def handle(record) -> None:
        pass

    with pytest.raises(RuntimeError):
        asyncio.run(batch.each([event(5)], batch.guard(handle)))
    assert heard == []
