"""Time in the service: epoch milliseconds everywhere, read through one clock.

Pure code takes a `Clock` (or the `now_ms` it returns) as an argument; only the edges (the
worker, the clients, the CLI) hand it the system clock. Tests pass a `ManualClock`."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_ms(self, ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep_ms(self, ms: int) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000)


class ManualClock:
    """A clock that moves only when told to (or when slept on): for tests."""

    def __init__(self, now_ms: int = 0):
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    async def sleep_ms(self, ms: int) -> None:
        self.now += max(ms, 0)

    def advance(self, ms: int) -> None:
        self.now += ms


SYSTEM = SystemClock()


def now_ms() -> int:
    """The system clock's epoch milliseconds (for the edges; pure code takes a Clock)."""
    return SYSTEM.now_ms()


def to_ms(value: datetime | int | float) -> int:
    """Epoch milliseconds of an Avro timestamp-millis as fastavro gives it (a datetime) or
    as written by hand (a number)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)
