"""Per input partition, where the worker's consumer stands, served as JSON at
/debug/consumer-state on the worker's web port.

A worker that is in its group and fetching but processes nothing has its reason in this
state, spread over two layers: Faust's (which partitions it treats as active, paused or
buffered, whether the flow is on, what it has acked and committed) and aiokafka's (fetch
position, highwater, pause, records fetched and not yet handed over, fetches in flight).
The values are read from another thread without a lock: good enough to see a stall that
lasts seconds, not a consistent snapshot.
"""

from __future__ import annotations

from typing import Any


def _tp_name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"


def first_holes(offsets: Any, limit: int = 5) -> list[int]:
    """The first `limit` offsets missing between the lowest and highest of `offsets`."""
    present = sorted(set(offsets))
    holes: list[int] = []
    for before, after in zip(present, present[1:], strict=False):
        holes.extend(range(before + 1, min(after, before + 1 + limit - len(holes))))
        if len(holes) >= limit:
            break
    return holes


def _faust_layer(consumer: Any) -> dict[str, Any]:
    def names(attribute: str) -> list[str]:
        return sorted(_tp_name(tp) for tp in list(getattr(consumer, attribute, None) or ()))

    acked = {_tp_name(tp): (min(offsets) if offsets else None,
                            max(offsets) if offsets else None, len(offsets))
             for tp, offsets in list(getattr(consumer, "_acked", {}).items())}
    holes = {_tp_name(tp): first_holes(offsets)
             for tp, offsets in list(getattr(consumer, "_acked", {}).items()) if offsets}
    gaps = {_tp_name(tp): sorted((i.begin, i.end) for i in tree)[:5]
            for tp, tree in list(getattr(consumer, "_gap", {}).items()) if tree}
    return {
        "flow_active": getattr(consumer, "flow_active", None),
        "active": names("_active_partitions"),
        "paused": names("_paused_partitions"),
        "buffered": names("_buffered_partitions"),
        "read_offset": {_tp_name(tp): offset for tp, offset
                        in list(getattr(consumer, "_read_offset", {}).items())},
        "committed_offset": {_tp_name(tp): offset for tp, offset
                             in list(getattr(consumer, "_committed_offset", {}).items())},
        # Lowest and highest acked offset not committed yet, and how many: a commit stays
        # behind while the lowest is more than one past the committed offset.
        "acked_min_max_and_pending": acked,
        # The first offsets missing between the lowest and highest acked: the commit stops
        # at the first of them until it is acked.
        "acked_holes": {name: found for name, found in holes.items() if found},
        # Offsets Faust counts as done without an ack (compaction gaps, re-read records).
        "gaps": gaps,
    }


def _kafka_layer(client: Any) -> dict[str, Any]:
    subscription = getattr(getattr(client, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    fetcher = getattr(client, "_fetcher", None)
    # Partitions with a fetch result (records or an error) the consumer has not taken yet.
    buffered = sorted(_tp_name(tp) for tp in list(getattr(fetcher, "_records", {}) or ()))
    partitions: dict[str, Any] = {}
    for tp in list(getattr(assignment, "tps", ()) or ()):
        state = assignment.state_value(tp)
        partitions[_tp_name(tp)] = {
            "position": state.position if state.has_valid_position else None,
            "awaiting_reset": state.awaiting_reset,
            "paused": state.paused,
            "highwater": getattr(state, "highwater", None),
        }
    return {
        "generation": getattr(getattr(client, "_coordinator", None), "generation", None),
        "partitions": partitions,
        "fetched_not_handed_over": buffered,
        "fetch_in_flight_nodes": sorted(getattr(fetcher, "_in_flight", ()) or ()),
        "fetch_tasks_pending": len(getattr(fetcher, "_pending_tasks", ()) or ()),
    }


def consumer_state(app: Any) -> dict[str, Any]:
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return {"started": False}
    state: dict[str, Any] = {"started": True, "faust": _faust_layer(consumer),
                             "flow_control_active": app.flow_control.is_active(),
                             "rebalancing": getattr(app, "rebalancing", None),
                             "in_recovery": getattr(app, "in_recovery", None)}
    client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    if client is not None:
        state["kafka"] = _kafka_layer(client)
    return state
