"""Which offset a reassembling consumer may commit, and what it must skip after a restart.

The committed offset never passes the first fragment of a set still open, so a crash loses
nothing: the set is read again from its start. What lies between that fragment and the
last record handled was delivered already; the commit's metadata says so (`through`, and
which sets were open), so after a restart those records are skipped and only the open sets
are assembled again: every message is delivered once across a crash (the usual
at-least-once window of one in-flight message aside)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

PREFIX = "ov1"
# Kafka's default offset.metadata.max.bytes is 4096.
MAX_METADATA = 4000


def short_id(set_id: str) -> str:
    return hashlib.sha256(set_id.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Replay:
    """From a commit's metadata: below `through` only the listed open sets are read again;
    `open_sets` None means every fragment is (the list did not fit the metadata)."""

    through: int
    open_sets: frozenset[str] | None

    def skips(self, offset: int, set_id: str | None) -> bool:
        if offset >= self.through:
            return False
        if set_id is None:
            return True
        return self.open_sets is not None and short_id(set_id) not in self.open_sets


def encode_metadata(through: int, open_ids: frozenset[str] | set[str] | None) -> str:
    """`open_ids` are short ids (short_id); None: every set counts as open."""
    ids = "*" if open_ids is None else ",".join(sorted(open_ids))
    text = f"{PREFIX};through={through};open={ids}"
    if len(text) > MAX_METADATA:
        text = f"{PREFIX};through={through};open=*"
    return text


def decode_metadata(text: str | None) -> Replay | None:
    if not text or not text.startswith(PREFIX + ";"):
        return None
    fields = dict(part.split("=", 1) for part in text.split(";")[1:] if "=" in part)
    try:
        through = int(fields["through"])
    except (KeyError, ValueError):
        return None
    raw = fields.get("open", "")
    open_sets = None if raw == "*" else frozenset(x for x in raw.split(",") if x)
    return Replay(through, open_sets)


@dataclass
class PartitionOffsets:
    through: int = -1  # every record below this has been handled (or is in an open set)
    replay: Replay | None = None
    open_first: dict[str, int] = field(default_factory=dict)  # open set -> first offset


class OffsetTracker:
    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def _of(self, topic: str, partition: int) -> PartitionOffsets:
        return self.partitions.setdefault((topic, partition), PartitionOffsets())

    def assigned(self, topic: str, partition: int, metadata: str | None) -> None:
        self.partitions[(topic, partition)] = PartitionOffsets(replay=decode_metadata(metadata))

    def revoked(self, topic: str, partition: int) -> None:
        self.partitions.pop((topic, partition), None)

    def skips(self, topic: str, partition: int, offset: int, set_id: str | None) -> bool:
        """Whether a record read again after a restart was handled before."""
        replay = self._of(topic, partition).replay
        return replay is not None and replay.skips(offset, set_id)

    def hold(self, topic: str, partition: int, set_id: str, offset: int) -> None:
        part = self._of(topic, partition)
        part.open_first[set_id] = min(offset, part.open_first.get(set_id, offset))

    def release(self, set_id: str) -> None:
        for part in self.partitions.values():
            part.open_first.pop(set_id, None)

    def handled(self, topic: str, partition: int, offset: int) -> None:
        part = self._of(topic, partition)
        part.through = max(part.through, offset + 1)

    def position(self, topic: str, partition: int) -> tuple[int, str] | None:
        """The offset to commit and its metadata, or None if nothing was handled yet."""
        part = self.partitions.get((topic, partition))
        if part is None or part.through < 0:
            return None
        commit = min([part.through, *part.open_first.values()])
        open_ids: set[str] | None = {short_id(s) for s in part.open_first}
        through = part.through
        replay = part.replay
        if replay is not None and through < replay.through:
            # Still reading again what was handled before the restart: keep its promise.
            through = replay.through
            open_ids = None if replay.open_sets is None or open_ids is None \
                else open_ids | replay.open_sets
        return commit, encode_metadata(through, open_ids)
