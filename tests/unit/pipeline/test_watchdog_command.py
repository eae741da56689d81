"""A watchdog command carries the time the timer found its incident due, and the incident
agent decides as of that time: handled again after a crash, it decides as it did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.contracts import headers as h
from app.contracts.records import RawRecord
from app.pipeline.commands import CommandStage, watchdog_command


class Recording:
    def __init__(self) -> None:
        self.times: list[int] = []

    async def check(self, incident, incidents, now_ms: int) -> None:
        self.times.append(now_ms)


def record(headers: h.Headers) -> RawRecord:
    return RawRecord("recovery.incident-commands", 0, 7, None, b"i-1", b"", headers)


def stage(now_ms: int) -> tuple[CommandStage, Recording]:
    watchdog = Recording()
    services = SimpleNamespace(clock=SimpleNamespace(now_ms=lambda: now_ms))
    return CommandStage(services, None, watchdog), watchdog  # type: ignore[arg-type]


def test_the_command_names_its_incident_and_its_time():
    key, headers = watchdog_command("i-1", 123_456)
    assert key == b"i-1"
    assert h.header_value(headers, h.COMMAND) == "watchdog"
    assert h.header_int(headers, h.DECIDED_AT) == 123_456


def test_the_agent_decides_as_of_the_commands_time_however_late_it_handles_it():
    _, headers = watchdog_command("i-1", 50_000)
    incidents = {"i-1": {"incident_id": "i-1", "state": "retrying", "reports": 1}}
    for now in (50_100, 90_000):  # the first run, and again after a crash much later
        commands, watchdog = stage(now)
        asyncio.run(commands.on_command(record(headers), incidents))
        assert watchdog.times == [50_000]


def test_a_command_without_a_time_decides_as_of_now():
    commands, watchdog = stage(70_000)
    asyncio.run(commands.on_command(record([(h.COMMAND, b"watchdog")]),
                                    {"i-1": {"incident_id": "i-1", "state": "retrying",
                                             "reports": 1}}))
    assert watchdog.times == [70_000]
