"""The shutdown deadline: the first signal starts it, its end or a second signal exits."""

from __future__ import annotations

import signal
import threading

from app.worker.shutdown import EXIT_DEADLINE_PASSED, ShutdownDeadline, unfinished_work


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.done = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.done.set()


def test_the_deadline_exits_when_the_shutdown_takes_too_long() -> None:
    exits = Exits()
    deadline = ShutdownDeadline(0.05, report=lambda: ["orders[0]: handled up to 7"], exit=exits)
    deadline.signalled(signal.SIGTERM)
    assert exits.done.wait(5)
    assert exits.codes == [EXIT_DEADLINE_PASSED]


def test_a_second_signal_exits_at_once() -> None:
    exits = Exits()
    deadline = ShutdownDeadline(60, exit=exits)
    deadline.signalled(signal.SIGTERM)
    assert exits.codes == []
    deadline.signalled(signal.SIGINT)
    assert exits.codes == [128 + signal.SIGINT]
    deadline.cancel()


def test_a_shutdown_that_finishes_in_time_is_not_cut_short() -> None:
    exits = Exits()
    deadline = ShutdownDeadline(0.2, exit=exits)
    deadline.signalled(signal.SIGTERM)
    deadline.cancel()
    assert not exits.done.wait(0.5)


def test_a_failing_report_does_not_keep_the_process_alive() -> None:
    exits = Exits()

    def broken() -> list[str]:
        raise RuntimeError("consumer gone")

    ShutdownDeadline(0.01, report=broken, exit=exits).signalled(signal.SIGTERM)
    assert exits.done.wait(5) and exits.codes == [EXIT_DEADLINE_PASSED]


class FakeTP:
    def __init__(self, topic: str, partition: int):
        self.topic, self.partition = topic, partition

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))


def test_unfinished_work_names_partitions_handled_past_their_last_commit() -> None:
    class Consumer:
        _acked = {FakeTP("in", 0): [5, 6, 7], FakeTP("in", 1): [3]}
        _committed_offset = {FakeTP("in", 0): 4, FakeTP("in", 1): 3}

    class FlowControl:
        def is_active(self) -> bool:
            return True

    class App:
        _consumer = Consumer()
        flow_control = FlowControl()

    assert unfinished_work(App()) == [
        "in[0]: handled up to offset 7, last commit at 4 (the rest is redone by the next worker)"]
