"""/debug/consumer-state (app/consumer_state.py): both layers of a consumer, per partition."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from app.worker.consumer_state import consumer_state


class TP(NamedTuple):
    topic: str
    partition: int


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


class Flow:
    def __init__(self, active: bool):
        self.active = active

    def is_active(self) -> bool:
        return self.active


def test_a_worker_without_a_consumer_says_so():
    assert consumer_state(SimpleNamespace()) == {"started": False}


def test_both_layers_are_reported_per_partition():
    p0, p1 = tp("in", 0), tp("in", 1)
    states = {("in", 0): SimpleNamespace(has_valid_position=True, position=42,
                                         awaiting_reset=False, paused=False, highwater=50),
              ("in", 1): SimpleNamespace(has_valid_position=False, position=None,
                                         awaiting_reset=True, paused=True, highwater=None)}
    assignment = SimpleNamespace(tps=[p0, p1],
                                 state_value=lambda t: states[(t.topic, t.partition)])
    client = SimpleNamespace(
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)),
        _fetcher=SimpleNamespace(_records={p0: object()}, _in_flight={3, 1},
                                 _pending_tasks={object()}),
        _coordinator=SimpleNamespace(generation=7))
    faust_consumer = SimpleNamespace(
        flow_active=True, _active_partitions={p0}, _paused_partitions={p1},
        _buffered_partitions=set(), _read_offset={p0: 41}, _committed_offset={p0: 30},
        _acked={p0: [31, 32, 40]}, _thread=SimpleNamespace(_consumer=client))
    app = SimpleNamespace(_consumer=faust_consumer, flow_control=Flow(False),
                          rebalancing=False, in_recovery=False)

    state = consumer_state(app)

    assert state["flow_control_active"] is False
    assert state["faust"]["active"] == ["in[0]"] and state["faust"]["paused"] == ["in[1]"]
    assert state["faust"]["acked_min_max_and_pending"] == {"in[0]": (31, 40, 3)}
    assert state["faust"]["committed_offset"] == {"in[0]": 30}
    kafka = state["kafka"]
    assert kafka["generation"] == 7
    assert kafka["partitions"]["in[0]"]["position"] == 42
    assert kafka["partitions"]["in[1]"] == {"position": None, "awaiting_reset": True,
                                            "paused": True, "highwater": None}
    assert kafka["fetched_not_handed_over"] == ["in[0]"]
    assert kafka["fetch_in_flight_nodes"] == [1, 3] and kafka["fetch_tasks_pending"] == 1
