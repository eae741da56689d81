"""Consumer status by written rules, in the manner of Burrow, as pure functions.

Burrow judges a partition over a sliding window of the group's offset commits. This service
polls instead of reading every commit, so a window here is the last few *samples* of
(time, committed offset, end offset) that the collector took, and the one thing a poller
cannot see (is the group still committing?) is read from the group's membership: a group
with no active members commits nothing.

Partition rules, applied in this order (the first that matches decides):

1. OK: the partition has no lag now, or had none at some sample of the window: a consumer
   that catches up, even now and then, is keeping up (Burrow rule 1).
2. REWIND: the committed offset went down between two samples: someone reset the group to
   an earlier position, so records will be processed again (Burrow rule 2).
3. STOP: the group has no active members while there is lag: nobody is consuming or
   committing, the lag can only grow (Burrow rule 3, "stopped committing").
4. STALL: members are there, but the committed offset is the same across a full window
   (at least ``min_samples`` samples) while there is lag: the consumer is stuck on a record
   (Burrow rule 4).
5. WARN: the committed offset moves, but over a full window the lag never went down from
   one sample to the next: the consumer is slower than its producers (Burrow rule 5).
6. OK otherwise.

Group rules (Burrow reports a group as ERR when any partition is in error; here the group
status also names the error when there is only one kind of it):

G1. no partition, or every partition OK: OK.
G2. partitions in error (REWIND, STOP, STALL), all of one kind: that kind.
G3. partitions in error of more than one kind: ERR.
G4. otherwise (some WARN, no error): WARN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    ERR = "ERR"
    STOP = "STOP"
    STALL = "STALL"
    REWIND = "REWIND"

    @property
    def code(self) -> int:
        """A number per status, for the Prometheus gauge and Grafana's value mapping."""
        return STATUS_CODES[self]


STATUS_CODES: dict[Status, int] = {
    Status.OK: 0, Status.WARN: 1, Status.ERR: 2, Status.STOP: 3, Status.STALL: 4,
    Status.REWIND: 5,
}
ERRORS = frozenset({Status.REWIND, Status.STOP, Status.STALL})

# Fewer samples than this are too few to call a trend (rules 4 and 5).
DEFAULT_MIN_SAMPLES = 3


@dataclass(frozen=True)
class Sample:
    """One look at a group's partition: when, where the group was, where the log ended."""

    at_ms: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


def lag_was_zero(window: Sequence[Sample]) -> bool:
    """Rule 1: no lag now, or none at some sample of the window."""
    return not window or any(sample.lag == 0 for sample in window)


def offsets_rewound(window: Sequence[Sample]) -> bool:
    """Rule 2: the committed offset went down between two consecutive samples."""
    return any(later.committed < earlier.committed
               for earlier, later in zip(window, window[1:], strict=False))


def consumer_stopped(window: Sequence[Sample], *, group_active: bool) -> bool:
    """Rule 3: no active member while there is lag."""
    return not group_active and bool(window) and window[-1].lag > 0


def offsets_stalled(window: Sequence[Sample], *, min_samples: int = DEFAULT_MIN_SAMPLES) -> bool:
    """Rule 4: a full window of samples with one and the same committed offset."""
    return len(window) >= min_samples and len({s.committed for s in window}) == 1


def lag_not_decreasing(window: Sequence[Sample], *,
                       min_samples: int = DEFAULT_MIN_SAMPLES) -> bool:
    """Rule 5: over a full window, the lag never went down from one sample to the next."""
    return len(window) >= min_samples and all(
        later.lag >= earlier.lag for earlier, later in zip(window, window[1:], strict=False))


def partition_status(window: Sequence[Sample], *, group_active: bool,
                     min_samples: int = DEFAULT_MIN_SAMPLES) -> Status:
    """The partition's status by rules 1 to 6, oldest sample first in ``window``."""
    if lag_was_zero(window):
        return Status.OK
    if offsets_rewound(window):
        return Status.REWIND
    if consumer_stopped(window, group_active=group_active):
        return Status.STOP
    if offsets_stalled(window, min_samples=min_samples):
        return Status.STALL
    if lag_not_decreasing(window, min_samples=min_samples):
        return Status.WARN
    return Status.OK


def group_status(partition_statuses: Iterable[Status]) -> Status:
    """The group's status from its partitions' statuses, by rules G1 to G4."""
    statuses = set(partition_statuses)
    errors = statuses & ERRORS
    if len(errors) == 1:
        return next(iter(errors))
    if errors:
        return Status.ERR
    if Status.WARN in statuses:
        return Status.WARN
    return Status.OK
