"""A dead letter replayed begins a new cycle of its incident: the dead letter was the last
cycle's outcome, the replay's acknowledgement is the new cycle's (`<incident>:2:completed`),
and the watchdog may send the replay once more before it gives up again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.contracts import headers as h
from app.contracts import lifecycle
from app.contracts.records import RawRecord
from app.pipeline.commands import ACK, REPLAY, CommandStage
from app.pipeline.decide import Incident


class Outbox:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.sent: list = []
        self.clock = SimpleNamespace(now_ms=lambda: 5_000)

    async def send(self, record) -> None:
        self.sent.append(record)

    async def emit(self, event_type: str, incident_id: str, *, step_id: str, **fields) -> None:
        self.events.append({"event_type": event_type, "event_id": step_id, **fields})


def command(kind: str, offset: int, **headers: bytes) -> RawRecord:
    return RawRecord("recovery.incident-commands", 0, offset, None, b"i-1", b"order",
                     [(h.COMMAND, kind.encode()), *headers.items()])


def test_a_replayed_dead_letter_is_completed_in_a_cycle_of_its_own():
    dead = Incident(incident_id="i-1", state="dead_lettered", reports=1, attempts=1,
                    dispatch_target="billing.redelivery", watchdog_redispatches=1)
    incidents = {"i-1": dead.to_json()}
    outbox = Outbox()

    async def completed(services, incident) -> None:
        pass

    stage = CommandStage(outbox, SimpleNamespace(on_completed=completed), None)  # type: ignore[arg-type]
    replay = command(REPLAY, 7, **{h.REPLAY_ID: b"3:41", h.ORIGINAL_KEY: b"m0"})
    asyncio.run(stage.on_command(replay, incidents))
    reopened = Incident.from_json(incidents["i-1"], "i-1")
    assert (reopened.state, reopened.cycle, reopened.watchdog_redispatches) == ("retrying", 2, 0)
    asyncio.run(stage.on_command(replay, incidents))  # handled again: delivered once
    asyncio.run(stage.on_command(command(ACK, 8, **{h.REPLAY_ID: b"3:41"}), incidents))
    assert [e["event_id"] for e in outbox.events] == ["i-1:replay:3:41", "i-1:2:completed"]
    assert len(outbox.sent) == 1


def event(event_type: str, event_id: str, outcome: str | None = None) -> dict:
    return {"event_type": event_type, "event_id": event_id, "outcome": outcome}


RECEIVED = event(lifecycle.FAILURE_RECEIVED, "e-1:received")
DEAD = event(lifecycle.DEAD_LETTERED, "i:1:watchdog-dead-lettered", "dead_lettered")
COMPLETED_1 = event(lifecycle.RECOVERY_COMPLETED, "i:1:completed", "completed")
COMPLETED_2 = event(lifecycle.RECOVERY_COMPLETED, "i:2:completed", "completed")
REPLAYED = event(lifecycle.REDELIVERED, "i:replay:3:41")
REDELIVERED = event(lifecycle.REDELIVERED, "i:redelivered-1")


def test_two_outcomes_of_one_cycle_conflict_and_a_reopening_between_them_does_not():
    assert lifecycle.conflicting([RECEIVED, DEAD, COMPLETED_1])
    assert lifecycle.conflicting([RECEIVED, DEAD, REDELIVERED, COMPLETED_1])  # no replay
    assert not lifecycle.conflicting([RECEIVED, DEAD, REPLAYED, COMPLETED_2])
    assert not lifecycle.conflicting([RECEIVED, COMPLETED_1])
    # A new failure report after an outcome is a new cycle too.
    received_again = event(lifecycle.FAILURE_RECEIVED, "e-2:received")
    assert not lifecycle.conflicting([RECEIVED, COMPLETED_1, received_again, COMPLETED_2])
    assert lifecycle.conflicting([RECEIVED, COMPLETED_1, REPLAYED, COMPLETED_2, DEAD])
