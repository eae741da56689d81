"""/debug/consumer-tasks (app/task_dump.py): where each task of the consumer thread waits."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.worker import task_dump


async def inner(event: asyncio.Event) -> None:
    await event.wait()


async def outer(event: asyncio.Event) -> None:
    await inner(event)


def test_the_await_chain_names_every_coroutine_down_to_the_wait():
    async def main() -> list[str]:
        event = asyncio.Event()
        task = asyncio.create_task(outer(event))
        await asyncio.sleep(0)
        chain = task_dump.await_chain(task)
        event.set()
        await task
        return chain

    chain = asyncio.run(main())
    names = [line.rsplit(" in ", 1)[-1] for line in chain if " in " in line]
    assert names[:3] == ["outer", "inner", "wait"]
    assert chain[-1].startswith("  waits on")


def test_the_tasks_of_a_running_consumer_thread_loop_are_listed():
    loop = asyncio.new_event_loop()
    try:
        event = asyncio.Event()
        task = loop.create_task(outer(event))
        loop.run_until_complete(asyncio.sleep(0))
        app = SimpleNamespace(_consumer=SimpleNamespace(_thread=SimpleNamespace(thread_loop=loop)))
        text = task_dump.consumer_tasks_text(app)
        assert text.startswith("1 task(s) on the consumer thread")
        assert "in outer" in text and "in inner" in text
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


def test_before_the_consumer_starts_it_says_so():
    assert "has not started" in task_dump.consumer_tasks_text(SimpleNamespace())
