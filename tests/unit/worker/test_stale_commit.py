"""Faust's committed offset raised to the group's when Faust's is stale and holds its
commits back (app/worker/offset_gaps.py: stale_commit, align_stale_commits)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from app.worker.offset_gaps import align_stale_commits, stale_commit


def test_a_stale_offset_below_the_groups_is_replaced_by_the_groups():
    assert stale_commit(276, 380, 380) == 380


def test_nothing_changes_while_faust_can_commit():
    assert stale_commit(380, 380, 500) is None
    assert stale_commit(380, 381, 500) is None  # one past: Faust's own tolerance


def test_a_real_hole_is_left_alone():
    # The group has not committed past Faust: records 277-379 were never acked here.
    assert stale_commit(276, 380, 276) is None
    assert stale_commit(276, 380, 100) is None


def test_unknowns_change_nothing():
    assert stale_commit(276, None, 380) is None
    assert stale_commit(276, 380, None) is None
    assert stale_commit(None, 380, 380) is None  # Faust commits without the check then


def consumer(committed: dict, acked: dict) -> SimpleNamespace:
    offsets = defaultdict(lambda: None)
    offsets.update(committed)
    return SimpleNamespace(_committed_offset=offsets, _acked=acked)


def test_only_held_partitions_are_raised_and_the_group_is_asked_only_for_those():
    held, fine, hole = TP("in", 0), TP("in", 1), TP("in", 2)
    c = consumer({held: 276, fine: 50, hole: 10}, {held: [380, 381], fine: [50, 51],
                                                     hole: [40]})
    asked = []
    group = {("in", 0): 380, ("in", 1): 999, ("in", 2): 10}

    def committed(topic: str, partition: int) -> int | None:
        asked.append((topic, partition))
        return group[(topic, partition)]

    raised = asyncio.run(align_stale_commits(c, committed))
    assert raised == 1
    assert c._committed_offset[held] == 380
    assert c._committed_offset[fine] == 50 and c._committed_offset[hole] == 10
    assert asked == [("in", 0), ("in", 2)]


def test_a_commit_made_while_the_group_was_asked_is_kept():
    tp = TP("in", 0)
    c = consumer({tp: 276}, {tp: [380]})

    def committed(topic: str, partition: int) -> int | None:
        c._committed_offset[tp] = 381  # Faust committed meanwhile
        return 380

    assert asyncio.run(align_stale_commits(c, committed)) == 0
    assert c._committed_offset[tp] == 381
