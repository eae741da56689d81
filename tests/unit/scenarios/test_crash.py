"""Scenario 4 (consumer crash): every branch of the decisions, the safe-mode recovery watch
and the consumer's obedience to control commands, without a broker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.client import control as ctl
from app.contracts.failure_event import new_failure_event
from app.pipeline import decide as d
from app.pipeline import health
from app.pipeline.classify import classify
from app.policy.rules import load_policies
from app.scenarios import consumer_crash as cc

POLICIES = load_policies()
WATCH = health.WatchSettings(check_interval_ms=15_000, window_ms=300_000, stale_after_ms=45_000)


def crash(severity: str | None, **fields) -> dict:
    event = new_failure_event(
        kind="CONSUMER_CRASHED", error_type="handler_exception", service="indexer",
        severity=severity, consumer_group="indexers", work_item_id="w1",
        failed_record={"topic": "docs", "partition": 2, "offset": 41, "key": b"k",
                       "value": b"v", "headers": []},
        detail=("ConsumerCrashed", {"consumer_id": "indexer-7"}), **fields)
    # As fastavro decodes it: the detail as (full name, fields).
    return event


@pytest.mark.parametrize(("severity", "response"), [
    ("FATAL", cc.QUARANTINE), ("CRITICAL", cc.QUARANTINE), ("ERROR", cc.REPROCESS),
    ("WARNING", cc.LOG), ("INFO", cc.LOG)])
def test_the_response_follows_the_severity(severity: str, response: str) -> None:
    assert cc.response_for(severity) == response


@pytest.mark.parametrize(("reported", "severity", "recoverability"), [
    ("FATAL", "FATAL", "non_recoverable"), ("CRITICAL", "CRITICAL", "non_recoverable"),
    ("ERROR", "ERROR", "recoverable"), (None, "ERROR", "recoverable"),
    ("WARNING", "WARNING", "recoverable")])
def test_crashes_are_classified_by_the_reported_severity(reported, severity,
                                                        recoverability) -> None:
    found = classify(POLICIES.rules, kind="CONSUMER_CRASHED", error_type="handler_exception",
                     reported_severity=reported)
    assert (found.severity, found.type, found.recoverability) == (
        severity, "consumer_crash", recoverability)


def decide_for(severity: str, attempts: int = 0) -> d.Decision:
    found = classify(POLICIES.rules, kind="CONSUMER_CRASHED", error_type="x",
                     reported_severity=severity)
    report = d.Report("e", 1, found, True, "indexers", "indexers.redelivery")
    incident = replace(d.Incident("w"), attempts=attempts, state="retrying" if attempts else
                       "open")
    return d.decide(incident, report, POLICIES.retry_for(found.type))


def test_fatal_and_critical_are_poisoned_at_once() -> None:
    assert isinstance(decide_for("FATAL"), d.Poison)
    assert isinstance(decide_for("CRITICAL"), d.Poison)


def test_error_is_reprocessed_1_2_4_seconds_then_poisoned() -> None:
    assert [decide_for("ERROR", n) for n in range(3)] == [d.Retry(1, 1000), d.Retry(2, 2000),
                                                          d.Retry(3, 4000)]
    exhausted = decide_for("ERROR", 3)
    assert isinstance(exhausted, d.Poison)
    # ... and then handled as a CRITICAL crash
    assert cc.quarantines(crash("ERROR"), exhausted)
    assert cc.handled_as("ERROR") == "CRITICAL"
    assert cc.handled_as("FATAL") == "FATAL"


def test_only_a_poisoned_crash_is_stopped_and_restarted() -> None:
    assert cc.quarantines(crash("FATAL"), d.Poison("x"))
    assert not cc.quarantines(crash("ERROR"), d.Retry(1, 1000))
    assert not cc.quarantines(crash("ERROR"), d.DeadLetter("no record"))
    other = {**crash("FATAL"), "kind": "PROCESSING_FAILED"}
    assert not cc.quarantines(other, d.Poison("x"))


def test_the_consumer_is_the_group_else_the_detail_consumer_id() -> None:
    assert cc.consumer_of(crash("FATAL")) == "indexers"
    event = crash("FATAL")
    event["source"]["consumer_group"] = None
    event["detail"] = ("io.recovery.v1.ConsumerCrashed", {"consumer_id": "indexer-7"})
    assert cc.consumer_of(event) == "indexer-7"
    event["detail"] = None
    assert cc.consumer_of(event) is None


def test_commands_stop_then_restart_in_safe_mode_skipping_the_poisoned_record() -> None:
    event = crash("FATAL")
    stop = cc.stop_command(event, "indexers", "w1", 5)
    restart = cc.restart_command(event, "indexers", "w1", 6)
    assert (stop.command, restart.command) == (ctl.STOP, ctl.RESTART_SAFE_MODE)
    assert restart.options == {"skipPoisonMessages": True, "enableDebugLogging": True,
                               "reduceParallelism": True}
    assert restart.skip == (ctl.RecordId("docs", 2, 41),)
    # Deterministic ids: a report processed twice sends commands the consumer sees once.
    assert cc.restart_command(event, "indexers", "w1", 99).command_id == restart.command_id
    assert ctl.ControlCommand.decode(restart.encode()) == restart


def test_a_crash_without_a_record_position_skips_nothing() -> None:
    event = crash("FATAL")
    event["failed_record"] = None
    assert cc.restart_command(event, "g", "w", 1).skip == ()


def test_the_watch_start_names_the_restart() -> None:
    restart = cc.restart_command(crash("FATAL"), "indexers", "w1", 6)
    start = cc.watch_start("indexers", restart)
    assert start == {"group": "indexers", "watch": "safe_mode_restart",
                     "control_id": restart.command_id, "incident_id": "w1"}


# ---- the recovery watch after a restart in safe mode (app/health.py) ---------------------

def watched(now: int = 1_000) -> health.ConsumerHealth:
    before = health.on_heartbeat(None, "g", "healthy", 50, now - 10)
    return health.start_watch(before, "g", now, reason=health.SAFE_MODE_RESTART,
                              control_id="c1", incident_id="w1")


def test_a_started_watch_is_kept_when_started_again() -> None:
    first = watched(1_000)
    assert health.start_watch(first, "g", 9_000, reason=health.SAFE_MODE_RESTART,
                              control_id="c1", incident_id="w1") == first
    other = health.start_watch(first, "g", 9_000, reason=health.SAFE_MODE_RESTART,
                               control_id="c2", incident_id="w2")
    assert other.watch_started_ms == 9_000 and other.watch_control_id == "c2"


def test_old_events_before_the_restart_do_not_confirm() -> None:
    # A beat from before the consumer obeyed the restart: healthy, 50 events, old control id.
    state = health.on_heartbeat(watched(), "g", "healthy", 50, 2_000, control_id=None)
    outcome = health.check(state, 3_000, WATCH)
    assert outcome.event_type is None and outcome.health.watch_started_ms == 1_000


def test_restarted_but_idle_is_not_yet_confirmed() -> None:
    state = health.on_heartbeat(watched(), "g", "healthy", 0, 2_000, control_id="c1")
    assert health.check(state, 3_000, WATCH).event_type is None


def test_restarted_and_processing_is_confirmed() -> None:
    state = health.on_heartbeat(watched(), "g", "healthy", 3, 2_000, control_id="c1")
    outcome = health.check(state, 3_000, WATCH)
    assert outcome.event_type == health.CONFIRMED
    assert outcome.health.watch_started_ms is None and outcome.health.watch_reason is None
    assert cc.resumes_after(state, outcome)


def test_failed_during_the_watch_escalates_at_once() -> None:
    state = health.on_heartbeat(watched(), "g", "failed", 0, 2_000, control_id="c1")
    outcome = health.check(state, 3_000, WATCH)
    assert outcome.event_type == health.ESCALATED
    assert not cc.resumes_after(state, outcome)


def test_window_closing_up_but_idle_is_degraded_and_down_is_escalated() -> None:
    idle = health.on_heartbeat(watched(), "g", "healthy", 0, 300_000, control_id="c1")
    assert health.check(idle, 301_000, WATCH).event_type == health.DEGRADED
    silent = watched()  # never beats again: stale
    assert health.check(silent, 301_000, WATCH).event_type == health.ESCALATED


def test_a_consumer_never_seen_gets_a_watch_and_is_escalated_if_it_never_comes() -> None:
    state = health.start_watch(None, "g", 1_000, reason=health.SAFE_MODE_RESTART,
                               control_id="c1")
    assert health.check(state, 20_000, WATCH).event_type is None
    assert health.check(state, 301_000, WATCH).event_type == health.ESCALATED


def test_other_watches_keep_the_scenario_3_rule() -> None:
    down = health.on_heartbeat(None, "g", "failed", 5, 1_000)
    started = health.check(down, 2_000, WATCH)
    assert started.event_type == health.UNHEALTHY
    still_failed = health.check(started.health, 3_000, WATCH)
    assert still_failed.event_type is None  # no immediate escalation outside safe mode
    back = health.on_heartbeat(started.health, "g", "healthy", 6, 4_000)
    assert health.check(back, 5_000, WATCH).event_type == health.CONFIRMED


# ---- the consumer's mode under control commands (app/client/control.py) ------------------

def command(name: str, cid: str, **kw) -> ctl.ControlCommand:
    return ctl.control_command(name, "g", command_id=cid, issued_at_ms=1, **kw)


def test_stop_then_restart_in_safe_mode_then_resume() -> None:
    poisoned = ctl.RecordId("docs", 2, 41)
    mode = ctl.ConsumerMode().apply(command(ctl.STOP, "s"))
    assert mode.state == ctl.STOPPED and mode.last_command_id == "s"
    mode = mode.apply(command(ctl.RESTART_SAFE_MODE, "r", options=ctl.SAFE_MODE_OPTIONS,
                              skip=(poisoned,)))
    assert (mode.state, mode.debug_logging, mode.reduced_parallelism) == (ctl.SAFE_MODE, True,
                                                                          True)
    assert mode.skips(poisoned) and not mode.skips(ctl.RecordId("docs", 2, 42))
    mode = mode.apply(command(ctl.RESUME, "u"))
    assert (mode.state, mode.debug_logging, mode.reduced_parallelism) == (ctl.RUNNING, False,
                                                                          False)
    assert mode.skips(poisoned)  # poison stays poison


def test_a_command_seen_before_changes_nothing() -> None:
    mode = ctl.ConsumerMode().apply(command(ctl.STOP, "s")).apply(command(ctl.RESUME, "u"))
    assert mode.apply(command(ctl.STOP, "s")) is mode


def test_safe_mode_options_can_be_turned_off() -> None:
    mode = ctl.ConsumerMode().apply(command(
        ctl.RESTART_SAFE_MODE, "r", skip=(ctl.RecordId("t", 0, 1),),
        options={"skipPoisonMessages": False, "enableDebugLogging": False}))
    assert mode.state == ctl.SAFE_MODE and not mode.skip and not mode.debug_logging
    assert mode.reduced_parallelism


def test_partition_commands_are_not_for_consumers() -> None:
    mode = ctl.ConsumerMode()
    assert mode.apply(command(ctl.ENTER_DEGRADED_MODE, "p")) is mode


class FakeMessage:
    def __init__(self, headers=None):
        self._headers = headers

    def headers(self):
        return self._headers

    def topic(self):
        return "docs.redelivery"

    def partition(self):
        return 0

    def offset(self):
        return 7


def test_a_redelivered_copy_is_known_by_its_original_position() -> None:
    from app.contracts import headers as h

    copy = FakeMessage([(h.ORIGINAL_TOPIC, b"docs"), (h.ORIGINAL_PARTITION, b"2"),
                        (h.ORIGINAL_OFFSET, b"41")])
    assert ctl.record_id_of(copy) == ctl.RecordId("docs", 2, 41)
    assert ctl.record_id_of(FakeMessage()) == ctl.RecordId("docs.redelivery", 0, 7)


@pytest.mark.parametrize("value", [b"", b"{}", b"[1]", b'{"command": "stop"}', b"\xff"])
def test_garbage_is_not_a_command(value: bytes) -> None:
    with pytest.raises(ValueError):
        ctl.ControlCommand.decode(value)
