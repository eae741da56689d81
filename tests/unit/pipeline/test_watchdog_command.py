"""A watchdog command carries the time the timer found its incident due, and the incident
agent decides as of that time: handled again after a crash, it decides as it did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.contracts import headers as h
from app.contracts.records import RawRecord
from app.pipeline import watchdog
from app.pipeline.commands import CommandStage, pinned_health, watchdog_command
from app.pipeline.decide import DeadLetter, Incident
from app.pipeline.watchdog_stage import WatchdogStage
from app.policy.rules import RetryPolicy
from app.policy.watchdog import WatchdogPolicy


class Recording:
    def __init__(self) -> None:
        self.times: list[int] = []
        self.health: list[bool | None] = []

    async def check(self, incident, incidents, now_ms: int, consumer_healthy=None) -> None:
        self.times.append(now_ms)
        self.health.append(consumer_healthy)


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


def test_the_command_carries_the_consumer_health_the_timer_read():
    assert pinned_health(watchdog_command("i-1", 1, True)[1]) is True
    assert pinned_health(watchdog_command("i-1", 1, False)[1]) is False
    assert pinned_health(watchdog_command("i-1", 1)[1]) is None
    assert pinned_health([(h.CONSUMER_HEALTHY, b"maybe")]) is None


def test_the_agent_hands_the_carried_health_to_the_watchdog():
    _, headers = watchdog_command("i-1", 50_000, False)
    commands, recorded = stage(90_000)
    asyncio.run(commands.on_command(record(headers), {"i-1": {"incident_id": "i-1",
                                                              "state": "retrying"}}))
    assert recorded.health == [False]


def watchdog_stage(live_health: bool) -> WatchdogStage:
    services = SimpleNamespace(
        policies=SimpleNamespace(retry_for=lambda _type: RetryPolicy()),
        settings=SimpleNamespace(ack_timeout_ms=10_000),
        consumer_healthy=lambda _group, _now: live_health,
        watchdog=WatchdogPolicy(held_limit_ms=60_000))
    return WatchdogStage(services)  # type: ignore[arg-type]


def test_a_command_handled_again_decides_with_the_health_it_carries_not_todays():
    # Overdue and held past the limit while the consumer was down: the first handling
    # dead-letters. Handled again after a crash, with heartbeats back meanwhile, reading the
    # health afresh would redispatch, and the acknowledgement that follows would complete an
    # incident already dead-lettered: two terminal outcomes.
    incident = Incident("i-1", state="retrying", attempts=1, consumer_group="billing",
                        history=((0, "retry 1 scheduled"),))
    at = 200_000
    first = watchdog_stage(live_health=False).decide(incident, at)
    again = watchdog_stage(live_health=True).decide(incident, at, consumer_healthy=False)
    assert isinstance(first, DeadLetter)
    assert again == first
    # Without the carried health the second decision would have differed.
    assert isinstance(watchdog_stage(live_health=True).decide(incident, at), watchdog.Redispatch)
