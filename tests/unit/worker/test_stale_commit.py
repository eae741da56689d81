"""Faust's view of an input partition's commit against the group's, and the repair when they
part ways (app/worker/offset_gaps.py: commit_repair, CommitReconciler)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from app.worker.offset_gaps import (
    CommitAhead,
    CommitReconciler,
    RaiseToGroup,
    ReadAgain,
    commit_held,
    commit_repair,
)


def test_faust_is_held_only_by_a_lowest_ack_more_than_one_past_its_committed_offset():
    assert commit_held(276, 380)
    assert not commit_held(380, 381)  # one past: Faust's own tolerance
    assert not commit_held(380, None)
    assert not commit_held(None, 380)  # Faust commits without the check then


def test_a_stale_offset_below_the_groups_is_replaced_by_the_groups():
    assert commit_repair(276, 380, 380, unchanged=False) == RaiseToGroup(380)


def test_an_offset_faust_believes_committed_beyond_the_groups_is_committed():
    # A refused commit recorded as made: nothing acked is left, the group stays behind.
    assert commit_repair(508, None, 268, unchanged=False) == CommitAhead(508)
    assert commit_repair(508, 520, 268, unchanged=True) == CommitAhead(508)
    assert commit_repair(508, None, None, unchanged=False) == CommitAhead(508)


def test_nothing_changes_while_faust_can_commit():
    assert commit_repair(380, 380, 380, unchanged=True) is None
    assert commit_repair(380, 381, 500, unchanged=True) is None
    assert commit_repair(380, None, 380, unchanged=True) is None


def test_a_hole_the_group_agrees_with_is_read_again_only_once_it_lasts():
    assert commit_repair(276, 380, 276, unchanged=False) is None  # may be on its way
    assert commit_repair(276, 380, 276, unchanged=True) == ReadAgain(276)


def test_faust_knowing_no_commit_needs_no_repair():
    assert commit_repair(None, 380, 380, unchanged=True) is None


def consumer(committed: dict, acked: dict) -> SimpleNamespace:
    offsets = defaultdict(lambda: None)
    offsets.update(committed)
    commits: list[dict] = []

    async def commit(offsets: dict) -> bool:
        commits.append(offsets)
        return True

    return SimpleNamespace(_committed_offset=offsets, _acked=acked, _gap={}, _commit_fut=None,
                           _commit=commit, commits=commits,
                           assignment=lambda: set(committed) | set(acked))


def reconciler(c, group: dict, asked: list, sought: list, busy: bool = False,
               read_again: frozenset = frozenset({"in"})) -> CommitReconciler:
    def committed(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        asked.extend(partitions)
        return {tp: group.get(tp) for tp in partitions}

    async def seek(tp, offset: int) -> None:
        sought.append((tp, offset))

    return CommitReconciler(lambda: c, committed, inputs={"in", "tier"},
                            read_again=set(read_again), seek=seek, busy=lambda: busy)


def test_each_repair_is_applied_to_its_partition_and_counted():
    held, ahead, fine, hole = TP("in", 0), TP("in", 1), TP("in", 2), TP("in", 3)
    c = consumer({held: 276, ahead: 508, fine: 50, hole: 10},
                 {held: [380, 381], fine: [50, 51], hole: [40]})
    group = {("in", 0): 380, ("in", 1): 268, ("in", 2): 50, ("in", 3): 10}
    asked: list = []
    sought: list = []
    r = reconciler(c, group, asked, sought)
    done = asyncio.run(r.check())
    assert dict(done) == {held: RaiseToGroup(380), ahead: CommitAhead(508)}
    assert c._committed_offset[held] == 380
    assert c.commits == [{ahead: 508}]
    assert sought == []  # the hole is new: it may still be on its way
    # Five seconds on, nothing moved on the hole: it is read again, once.
    group[("in", 1)] = 508
    assert dict(asyncio.run(r.check())) == {hole: ReadAgain(10)}
    assert sought == [(("in", 3), 10)]
    assert asyncio.run(r.check()) == []
    assert r.repairs == {"commit_ahead": 1, "raise_to_group": 1, "read_again": 1,
                         "commit_hung": 0, "commit_beside": 0}


def test_changelogs_are_not_looked_at_and_a_tier_hole_is_not_read_again():
    changelog, tier = TP("incidents-changelog", 0), TP("tier", 0)
    c = consumer({changelog: 5, tier: 10}, {tier: [40]})
    asked: list = []
    sought: list = []
    r = reconciler(c, {("tier", 0): 10, ("incidents-changelog", 0): None}, asked, sought)
    asyncio.run(r.check())
    asyncio.run(r.check())
    assert sought == []
    assert ("incidents-changelog", 0) not in asked


def test_no_hole_is_read_again_while_the_agent_is_busy():
    tp = TP("in", 0)
    c = consumer({tp: 10}, {tp: [40]})
    sought: list = []
    r = reconciler(c, {("in", 0): 10}, [], sought, busy=True)
    asyncio.run(r.check())
    asyncio.run(r.check())
    assert sought == []


def test_a_commit_made_while_the_group_was_asked_is_kept():
    tp = TP("in", 0)
    c = consumer({tp: 276}, {tp: [380]})

    def committed(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        c._committed_offset[tp] = 381  # Faust committed meanwhile
        return {("in", 0): 380}

    async def seek(tp, offset: int) -> None:
        raise AssertionError("no seek")

    r = CommitReconciler(lambda: c, committed, inputs={"in"}, read_again={"in"}, seek=seek,
                         busy=lambda: False)
    assert asyncio.run(r.check()) == []
    assert c._committed_offset[tp] == 381


def test_nothing_is_repaired_while_faust_commits():
    tp = TP("in", 0)
    c = consumer({tp: 508}, {})
    c._commit_fut = object()
    r = reconciler(c, {("in", 0): 268}, [], [])
    assert asyncio.run(r.check()) == []
    assert c.commits == []


def test_a_hole_faust_counts_as_done_in_its_gaps_is_not_read_again():
    tp = TP("in", 0)
    c = consumer({tp: 268}, {tp: [451]})
    c._gap[tp] = [SimpleNamespace(begin=269, end=451)]  # records read again, marked done
    sought: list = []
    r = reconciler(c, {("in", 0): 268}, [], sought)
    asyncio.run(r.check())
    asyncio.run(r.check())
    assert sought == []


def test_a_partition_the_group_could_not_be_asked_about_is_left_alone():
    tp = TP("in", 0)
    c = consumer({tp: 508}, {})
    r = CommitReconciler(lambda: c, lambda partitions: {}, inputs={"in"}, read_again={"in"},
                         seek=None, busy=lambda: False)  # type: ignore[arg-type]
    assert asyncio.run(r.check()) == []
    assert c.commits == []


def test_a_commit_that_does_not_return_is_reported_once(caplog):
    tp = TP("in", 0)
    c = consumer({tp: 508}, {})
    c._commit_fut = object()
    now = [0.0]
    r = CommitReconciler(lambda: c, lambda partitions: {("in", 0): 268}, inputs={"in"},
                         read_again={"in"}, seek=None, busy=lambda: False,  # type: ignore
                         hung_after_s=30, clock=lambda: now[0])
    for now[0] in (0.0, 10.0, 29.0):
        asyncio.run(r.check())
    assert r.repairs["commit_hung"] == 0
    for now[0] in (31.0, 40.0, 90.0):
        asyncio.run(r.check())
    assert r.repairs["commit_hung"] == 1  # once for this commit
    assert "has not returned for 31 s" in caplog.text
    c._commit_fut = object()  # another commit: its own bound
    for now[0] in (100.0, 131.0):
        asyncio.run(r.check())
    assert r.repairs["commit_hung"] == 2 and c.commits == []


def test_the_offset_faust_would_commit_next():
    from app.worker.offset_gaps import contiguous_end

    assert contiguous_end(190, list(range(189, 516)), []) == 516  # the gate's partition
    assert contiguous_end(10, [11, 12, 14], []) == 13  # up to the first hole
    assert contiguous_end(10, [20], [(11, 20)]) == 21  # gaps count as done
    assert contiguous_end(10, [13], []) is None  # a hole at the head
    assert contiguous_end(None, [5, 6], []) == 7  # no commit known: from the lowest
    assert contiguous_end(10, [], []) is None
    assert contiguous_end(11, [9, 10], []) is None  # nothing past the committed offset


def test_beside_a_hung_commit_the_worker_commits_what_faust_would_after_flushing():
    tp, other = TP("in", 0), TP("in", 1)
    c = consumer({tp: 190, other: 50}, {tp: list(range(189, 516)), other: []})
    c._acked_index = {tp: set(range(189, 516)), other: set()}
    steps: list[str] = []

    async def flush() -> None:
        steps.append("flush")

    async def attached(offsets: dict) -> None:
        steps.append("attached")

    c._handle_attached = attached
    c._commit_fut = object()
    now = [0.0]
    r = CommitReconciler(lambda: c, lambda partitions: {}, inputs={"in"}, read_again={"in"},
                         seek=None, busy=lambda: False,  # type: ignore[arg-type]
                         hung_after_s=30, clock=lambda: now[0], flush=flush)
    for now[0] in (0.0, 20.0):
        asyncio.run(r.check())
    assert c.commits == []  # not hung yet: Faust's own commit may still return
    now[0] = 31.0
    asyncio.run(r.check())
    assert steps == ["flush", "attached"]
    assert c.commits == [{tp: 516}]
    assert c._committed_offset[tp] == 516 and c._acked[tp] == [] and c._acked_index[tp] == set()
    assert r.repairs["commit_beside"] == 1


def test_nothing_is_committed_beside_when_the_flush_does_not_return():
    tp = TP("in", 0)
    c = consumer({tp: 10}, {tp: [11, 12]})

    async def never() -> None:
        await asyncio.sleep(3600)

    r = CommitReconciler(lambda: c, lambda partitions: {}, inputs={"in"}, read_again={"in"},
                         seek=None, busy=lambda: False, flush=never)  # type: ignore[arg-type]
    assert asyncio.run(r.commit_beside(c, bound_s=0.05)) == {}
    assert c.commits == [] and c._committed_offset[tp] == 10
