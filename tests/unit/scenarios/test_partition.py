"""Scenario 6 (network partition, split brain): every branch of the decisions without a
broker."""

from __future__ import annotations

import orjson
import pytest

from app.client import control as ctl
from app.client.partition_state import PartitionMode
from app.pipeline.conflicts import Resolution, Version
from app.policy.state import PartitionPolicy
from app.scenarios import network_partition as np

POLICY = PartitionPolicy()


def write(side: str, key: str, value, version: int, at: int | None = None) -> np.SideWrite:
    return np.SideWrite(side, key, value, version, at)


def test_viability_decides_autonomous_or_degraded() -> None:
    assert np.mode_for(True) == np.AUTONOMOUS
    assert np.mode_for(False) == np.DEGRADED


def test_autonomous_mode_configures_the_source_switches() -> None:
    command = np.mode_command("p1", np.AUTONOMOUS, POLICY, event_id="e", incident_id="i",
                              components=["orders"], now_ms=1)
    assert command.command == ctl.ENTER_PARTITIONED_MODE and command.target == "p1"
    assert command.options["configuration"] == {
        "disableRemoteStateSync": True, "enableLocalLeaderElection": True,
        "increaseLocalCaching": True, "enableConflictLogging": True}
    assert command.options["components"] == ["orders"]


def test_degraded_mode_is_read_only() -> None:
    command = np.mode_command("p1", np.DEGRADED, POLICY, event_id="e", incident_id="i",
                              components=[], now_ms=1)
    assert command.command == ctl.ENTER_DEGRADED_MODE
    assert command.options["configuration"]["readOnly"] is True


def test_side_writes_parse_or_are_refused() -> None:
    parsed = np.SideWrite.parse(orjson.dumps({"side": "a", "key": "k", "value": {"x": 1},
                                              "version": 3, "updated_at": 9}))
    assert parsed == write("a", "k", {"x": 1}, 3, 9)
    assert np.SideWrite.parse(b'{"side": "a", "key": "k"}').version == 0
    for bad in (b"", b"[]", b'{"key": "k"}', b'{"side": "a", "key": "k", "version": "x"}'):
        with pytest.raises(ValueError):
            np.SideWrite.parse(bad)


def test_each_side_s_latest_version_per_key() -> None:
    states = np.latest_by_side([write("a", "k", 1, 1, 10), write("a", "k", 2, 2, 5),
                                write("a", "k", 3, 2, 7), write("b", "k", 9, 1, 99)])
    assert states["k"]["a"] == Version("a", 3, 2, 7)
    assert states["k"]["b"] == Version("b", 9, 1, 99)


def test_keys_written_alike_or_by_one_side_merge_without_conflict() -> None:
    states = np.latest_by_side([write("a", "same", {"v": 1}, 4, 1),
                                write("b", "same", {"v": 1}, 5, 2),
                                write("a", "only-a", "x", 1, 1)])
    result = np.merge_partition_states(states, "last_write_wins")
    assert result.conflicts == {} and result.unresolved == ()
    assert result.merged["same"].value == {"v": 1} and result.merged["same"].version == 5
    assert result.merged["only-a"].value == "x"
    assert np.verify_integrity(states, result) == (True, [])


def test_conflicts_resolved_by_the_configured_strategy() -> None:
    states = np.latest_by_side([write("a", "k", {"x": 1, "y": 1}, 2, 10),
                                write("b", "k", {"y": 2}, 2, 20)])
    lww = np.merge_partition_states(states, "last_write_wins")
    assert lww.conflicts["k"].action == "use_b_version" and lww.conflicts_resolved == 1
    assert lww.merged["k"].value == {"y": 2} and lww.merged["k"].version == 3
    merged = np.merge_partition_states(states, "merge_versions")
    assert merged.merged["k"].value == {"x": 1, "y": 2}
    preferred = np.merge_partition_states(states, "use_a_version")
    assert preferred.merged["k"].value == {"x": 1, "y": 1}
    for result in (lww, merged, preferred):
        assert np.verify_integrity(states, result) == (True, [])


def test_a_manual_conflict_is_left_out_and_integrity_not_verified() -> None:
    states = np.latest_by_side([write("a", "k", 1, 1), write("b", "k", 2, 1),
                                write("a", "fine", 0, 1)])
    result = np.merge_partition_states(states, "manual_resolution_required")
    assert result.unresolved == ("k",) and result.conflicts_resolved == 0
    assert "k" not in result.merged and "fine" in result.merged
    intact, problems = np.verify_integrity(states, result)
    assert not intact and problems == ["k: conflict left for manual resolution"]


def test_integrity_check_catches_a_lost_key_an_older_version_and_a_wrong_value() -> None:
    states = np.latest_by_side([write("a", "k", 1, 5), write("b", "k", 2, 1),
                                write("a", "lost", 1, 1)])
    broken = np.MergeResult(
        merged={"k": Version("merged", 3, 4)},
        conflicts={"k": Resolution("use_a_version", "last_write_wins", 1, 5, "a")},
        unresolved=())
    intact, problems = np.verify_integrity(states, broken)
    assert not intact
    assert problems == ["k: merged version 4 older than ['a']",
                        "k: merged value differs from its resolution",
                        "lost: written by ['a'] but missing from the merge"]


def test_the_partition_watch_is_one_per_partition() -> None:
    assert np.watch_id_of("eu-1") == "partition:eu-1"


def test_a_component_follows_the_mode_commands() -> None:
    def command(name: str, cid: str, **options) -> ctl.ControlCommand:
        return ctl.control_command(name, "p1", command_id=cid, issued_at_ms=1,
                                   options=options)

    mode = PartitionMode().apply(command(ctl.ENTER_PARTITIONED_MODE, "1",
                                         configuration={"increaseLocalCaching": True}))
    assert mode.state == "autonomous" and mode.configuration == {"increaseLocalCaching": True}
    assert mode.apply(command(ctl.ENTER_PARTITIONED_MODE, "1")) is mode
    mode = mode.apply(command(ctl.ENTER_DEGRADED_MODE, "2", configuration={"readOnly": True}))
    assert mode.state == "degraded"
    mode = mode.apply(command(ctl.RESUME_NORMAL_OPERATION, "3"))
    assert mode.state == "normal" and mode.configuration == {}
    assert mode.apply(command(ctl.STOP, "4")).state == "normal"
