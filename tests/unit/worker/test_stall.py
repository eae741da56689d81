"""The intake stall guard: when a partition counts as stalled, and which rescue comes next."""

from __future__ import annotations

import asyncio

from app.worker.stall import (
    STALL_EXIT_CODE,
    RebalanceClock,
    RebalanceGuard,
    Rescue,
    StallClock,
    StallGuard,
)

TP = ("t.recovery.failures", 0)


def test_records_waiting_past_the_bound_are_sought_then_rejoined_then_exit():
    clock = StallClock(bound_ms=1000)
    assert clock.observe(TP, 5, 9, 0, True) is None  # the clock starts
    assert clock.observe(TP, 5, 9, 999, True) is None
    assert clock.observe(TP, 5, 9, 1000, True) is Rescue.SEEK
    assert clock.observe(TP, 5, 9, 1999, True) is None  # each step has a bound of its own
    assert clock.observe(TP, 5, 9, 2000, True) is Rescue.REJOIN
    assert clock.observe(TP, 5, 9, 3000, True) is Rescue.EXIT


def test_progress_starts_the_clock_and_the_steps_over():
    clock = StallClock(bound_ms=1000)
    clock.observe(TP, 5, 9, 0, True)
    assert clock.observe(TP, 5, 9, 1000, True) is Rescue.SEEK
    assert clock.observe(TP, 6, 9, 1500, True) is None  # the agent handled one
    assert clock.observe(TP, 6, 9, 2499, True) is None
    assert clock.observe(TP, 6, 9, 2500, True) is Rescue.SEEK  # a new stall begins at seek


def test_nothing_waiting_is_never_a_stall():
    clock = StallClock(bound_ms=1000)
    for now in range(0, 10_000, 500):
        assert clock.observe(TP, 9, 9, now, True) is None  # caught up
        assert clock.observe(("t.other", 1), None, 4, now, True) is None  # no expectation


def test_a_wait_that_does_not_count_holds_the_clock_but_keeps_the_step():
    clock = StallClock(bound_ms=1000)
    clock.observe(TP, 5, 9, 0, True)
    assert clock.observe(TP, 5, 9, 1000, True) is Rescue.SEEK
    # Rebalancing, restoring tables or busy with a record: the clock starts over...
    assert clock.observe(TP, 5, 9, 1900, False) is None
    assert clock.observe(TP, 5, 9, 2800, True) is None
    # ...but the stall is the same one: the next step is the rejoin, not a second seek.
    assert clock.observe(TP, 5, 9, 2900, True) is Rescue.REJOIN


def test_catching_up_ends_the_stall():
    clock = StallClock(bound_ms=1000)
    clock.observe(TP, 5, 9, 0, True)
    assert clock.observe(TP, 5, 9, 1000, True) is Rescue.SEEK
    assert clock.observe(TP, 5, 5, 1100, True) is None  # end offset moved down? nothing waits
    clock.observe(TP, 5, 9, 1200, True)
    assert clock.observe(TP, 5, 9, 2200, True) is Rescue.SEEK


def test_partitions_no_longer_held_are_forgotten():
    clock = StallClock(bound_ms=1000)
    clock.observe(TP, 5, 9, 0, True)
    clock.forget_except(set())
    assert clock.observe(TP, 5, 9, 1500, True) is None  # starts again


class Fake:
    def __init__(self, expected, committed, end):
        self.now = 0
        self.expected_offsets = expected
        self.committed_offsets = committed
        self.ends = end
        self.sought: list[tuple] = []
        self.rejoins = 0
        self.exits: list[int] = []
        self.count = True
        self.handled = 0
        self.forwarded: dict = {}  # Faust's read offsets (None: nothing handed on yet)

    def guard(self) -> StallGuard:
        async def seek(tp, offset):
            self.sought.append((tp, offset))

        async def rejoin():
            self.rejoins += 1

        return StallGuard(
            clock=StallClock(1000), partitions=lambda: set(self.ends),
            expected=self.expected_offsets.get,
            committed=lambda topic, partition: self.committed_offsets.get((topic, partition)),
            watermarks=lambda topic, partition: (0, self.ends[(topic, partition)]),
            counting=lambda: self.count, handled=lambda: self.handled,
            forwarded=self.forwarded.get, seek=seek,
            rejoin=rejoin, exit=self.exits.append,
            state=lambda: {"flow": True}, now_ms=lambda: self.now)


def test_the_guard_seeks_to_the_first_unhandled_offset_of_the_stalled_partition_only():
    other = ("t.recovery.failures", 1)
    fake = Fake(expected={TP: 7}, committed={other: 3}, end={TP: 12, other: 3})
    guard = fake.guard()
    for fake.now in (0, 500, 1000):
        asyncio.run(guard.check())
    assert fake.sought == [(TP, 7)]
    assert guard.rescues == 1


def test_with_nothing_handled_yet_the_committed_offset_is_the_expectation():
    # The replacement worker that consumed nothing: no record handled in this generation.
    fake = Fake(expected={}, committed={TP: 40}, end={TP: 90})
    guard = fake.guard()
    for fake.now in (0, 1000, 2000, 3000):
        asyncio.run(guard.check())
    assert fake.sought == [(TP, 40)]
    assert fake.rejoins == 1
    assert fake.exits == [STALL_EXIT_CODE]


def test_the_guard_does_nothing_while_waits_do_not_count():
    fake = Fake(expected={TP: 7}, committed={}, end={TP: 12})
    fake.count = False
    guard = fake.guard()
    for fake.now in range(0, 10_000, 500):
        asyncio.run(guard.check())
    assert (fake.sought, fake.rejoins, fake.exits) == ([], 0, [])


def test_a_partition_waiting_while_the_agent_works_on_others_is_no_stall():
    # After a freeze: commands wait behind a backlog of failure events the agent works off;
    # Faust has handed them on (its read offset is past the first waiting one).
    fake = Fake(expected={TP: 7}, committed={}, end={TP: 12})
    fake.forwarded[TP] = 11
    guard = fake.guard()
    for fake.now in range(0, 10_000, 500):
        fake.handled += 40
        asyncio.run(guard.check())
    assert (fake.sought, fake.rejoins, fake.exits) == ([], 0, [])
    # The agent stops handling anything: one bound later the partition is sought.
    for fake.now in range(10_000, 11_500, 500):
        asyncio.run(guard.check())
    assert fake.sought == [(TP, 7)]


def test_records_faust_never_handed_on_stall_even_while_the_agent_works_on_others():
    # The replacement worker that handled commands (the watchdog's, the service's acks) but
    # no failure event for minutes: Faust's read offset stayed below the committed offset.
    fake = Fake(expected={}, committed={TP: 16}, end={TP: 28})
    fake.forwarded[TP] = 13
    guard = fake.guard()
    for fake.now in range(0, 1500, 500):
        fake.handled += 3
        asyncio.run(guard.check())
    assert fake.sought == [(TP, 16)]


def test_a_wait_excused_for_a_bound_is_logged_with_its_reason(caplog):
    fake = Fake(expected={TP: 7}, committed={}, end={TP: 12})
    fake.count = False
    guard = fake.guard()
    with caplog.at_level("WARNING", logger="app.worker.stall"):
        for fake.now in range(0, 2500, 500):
            asyncio.run(guard.check())
    excused = [r.getMessage() for r in caplog.records if "not counted" in r.getMessage()]
    assert len(excused) == 2  # once per bound
    assert "records 7-11 have waited 1s" in excused[0] and "rebalances" in excused[0]
    assert fake.sought == []


def test_a_rebalance_past_its_bound_gets_a_rejoin_then_an_exit():
    clock = RebalanceClock(bound_ms=1000)
    assert clock.observe(True, 0) is None  # the clock starts
    assert clock.observe(True, 999) is None
    assert clock.observe(True, 1000) is Rescue.REJOIN
    assert clock.observe(True, 1999) is None  # the exit has a bound of its own
    assert clock.observe(True, 2000) is Rescue.EXIT


def test_a_rebalance_that_ends_starts_the_clock_and_the_steps_over():
    clock = RebalanceClock(bound_ms=1000)
    clock.observe(True, 0)
    assert clock.observe(True, 1000) is Rescue.REJOIN
    assert clock.observe(False, 1500) is None  # assigned and restored
    assert clock.observe(True, 1600) is None  # a new rebalance: a new clock
    assert clock.observe(True, 2599) is None
    assert clock.observe(True, 2600) is Rescue.REJOIN


def test_a_worker_not_rebalancing_is_never_rescued():
    clock = RebalanceClock(bound_ms=1000)
    assert all(clock.observe(False, now) is None for now in range(0, 10_000, 500))


def test_the_rebalance_guard_rejoins_then_exits_and_logs_each_step(caplog):
    now = [0]
    rejoins: list[int] = []
    exits: list[int] = []

    async def rejoin() -> None:
        rejoins.append(now[0])

    guard = RebalanceGuard(clock=RebalanceClock(bound_ms=1000), rebalancing=lambda: True,
                           rejoin=rejoin, exit=exits.append, state=lambda: {"generation": 1},
                           now_ms=lambda: now[0])
    for now[0] in (0, 500, 1000, 1500, 2000):
        asyncio.run(guard.check())
    assert rejoins == [1000]
    assert exits == [STALL_EXIT_CODE]
    assert guard.rescues == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "rescue: rejoin" in errors[0] and "rescue: exit" in errors[1]
    assert "'generation': 1" in errors[0]
