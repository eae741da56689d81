"""The incidents table's index of open incidents: follows writes, is built again for a new
consumer generation, and is not trusted while the worker rebalances or restores."""

from __future__ import annotations

from app.worker.open_incidents import IndexedIncidents


class World:
    def __init__(self) -> None:
        self.table: dict[str, dict] = {}
        self.generation = 1
        self.settled = True

    def index(self) -> IndexedIncidents:
        return IndexedIncidents(self.table, lambda: self.generation, lambda: self.settled)


def state(name: str) -> dict:
    return {"state": name, "reports": 1}


def test_the_first_scan_builds_the_index_from_the_table_and_later_ones_reuse_it() -> None:
    world = World()
    world.table.update(a=state("retrying"), b=state("completed"), c=state("open"))
    index = world.index()
    assert dict(index.open_items()) == {"a": state("retrying"), "c": state("open")}
    world.table["d"] = state("retrying")  # behind the index's back, same generation
    assert set(dict(index.open_items())) == {"a", "c"}
    assert index.rebuilds == 1


def test_writes_through_the_index_open_and_close_incidents() -> None:
    world = World()
    index = world.index()
    index.open_items()
    index["x"] = state("retrying")
    index["y"] = state("dead_lettered")
    assert set(dict(index.open_items())) == {"x"}
    index["x"] = state("completed")
    assert index.open_items() == []
    assert world.table["x"] == state("completed") and index.get("y") == state("dead_lettered")
    assert index.get("missing") is None and len(index) == 2 and set(index) == {"x", "y"}
    assert index.rebuilds == 1


def test_a_new_generation_builds_the_index_again() -> None:
    world = World()
    index = world.index()
    index.open_items()
    world.table["restored"] = state("retrying")  # a partition assigned and restored
    world.generation = 2
    assert set(dict(index.open_items())) == {"restored"}
    assert index.rebuilds == 2


def test_while_not_settled_the_table_is_read_and_the_index_dropped() -> None:
    world = World()
    index = world.index()
    index.open_items()
    world.settled = False
    world.table["restoring"] = state("open")
    assert set(dict(index.open_items())) == {"restoring"}
    world.table["later"] = state("retrying")  # restore goes on, same generation
    world.settled = True
    assert set(dict(index.open_items())) == {"restoring", "later"}


def test_an_empty_entry_is_not_open() -> None:
    world = World()
    world.table.update(empty=None, blank={})
    assert world.index().open_items() == []


def test_held_writes_reach_the_table_only_when_applied_and_reads_see_them_before() -> None:
    world = World()
    index = world.index()
    index.open_items()
    world.table["done"] = state("completed")
    with index.held_writes() as apply:
        index["x"] = state("retrying")
        index["x"] = state("completed")  # the last write of a key is the one kept
        del index["done"]
        assert world.table == {"done": state("completed")}  # nothing reached the table
        assert index["x"] == state("completed") and index.get("done") is None
        assert "x" in index and "done" not in index
        apply()
        assert world.table == {"x": state("completed")}
    assert index.open_items() == []


def test_held_writes_not_applied_are_dropped_with_the_batch() -> None:
    world = World()
    index = world.index()
    try:
        with index.held_writes():
            index["x"] = state("retrying")
            raise RuntimeError("the batch did not finish")
    except RuntimeError:
        pass
    assert world.table == {} and index.get("x") is None
    index["y"] = state("retrying")  # outside a batch: written at once
    assert world.table == {"y": state("retrying")}


def test_each_task_holds_its_own_writes() -> None:
    import asyncio

    world = World()
    index = world.index()
    order: list[str] = []

    async def batch(key: str, pause: float) -> None:
        with index.held_writes() as apply:
            index[key] = state("retrying")
            await asyncio.sleep(pause)
            assert set(world.table) == set(order)  # the other task's writes, once applied
            apply()
            order.append(key)

    async def both() -> None:
        await asyncio.gather(batch("slow", 0.05), batch("fast", 0.01))

    asyncio.run(both())
    assert order == ["fast", "slow"] and set(world.table) == {"fast", "slow"}


def test_a_held_write_is_applied_as_the_record_that_made_it() -> None:
    import weakref

    from faust.streams import _current_event

    seen: list[object] = []

    class Table(dict):
        def __setitem__(self, key: str, value: dict) -> None:
            seen.append(_current_event.get(None)())
            super().__setitem__(key, value)

    class Event:
        pass

    first, second = Event(), Event()
    index = IndexedIncidents(Table(), lambda: 1, lambda: True)
    with index.held_writes() as apply:
        _current_event.set(weakref.ref(first))
        index["a"] = state("retrying")
        _current_event.set(weakref.ref(second))
        index["b"] = state("retrying")
        apply()
    assert seen == [first, second]
    assert _current_event.get(None)() is second  # the batch's own event is kept
