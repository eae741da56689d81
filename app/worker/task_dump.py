"""The stack of every asyncio task on the worker's consumer thread, served at
/debug/consumer-tasks on the worker's web port.

mode answers SIGUSR1 with the tasks of the main thread's event loop only; Faust runs the
Kafka consumer (group join, assignment, fetching) on an event loop of its own thread, which
is where a worker that joined its group and then did nothing is stuck (docs/exactly-once.md).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any


def consumer_thread_tasks(app: Any) -> list[asyncio.Task] | None:
    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is None:
        return None
    for _ in range(5):  # the other thread may add a task while the set is being copied
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return []


def await_chain(task: asyncio.Task, limit: int = 40) -> list[str]:
    """Where a task waits: every coroutine it awaits, outermost first, then what the
    innermost one waits on (asyncio's own stack of a task shows the outermost frame only)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(lines) < limit:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            lines.append(f"  waits on {awaited!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


def consumer_tasks_text(app: Any) -> str:
    tasks = consumer_thread_tasks(app)
    if tasks is None:
        return "the consumer thread has not started\n"
    out = io.StringIO()
    out.write(f"{len(tasks)} task(s) on the consumer thread\n\n")
    for task in tasks:
        out.write(f"{task!r}\n")
        out.write("\n".join(await_chain(task)))
        out.write("\n\n")
    return out.getvalue()
