"""Reassembling fragment sets: interleaved with other records and other sets, out of order,
duplicated. A whole message is given back once, with its original key and headers; an
incomplete set expires after a configured time; memory is bounded by a cap, beyond which a
set is assembled in a file on disk (or, with spilling off, rejected with a clear reason).

No Kafka here: the consumer wrappers feed records in and act on what comes out."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.contracts import headers as h
from app.oversize import codecs
from app.oversize import headers as oh
from app.oversize.records import Incoming, Rejected, Whole

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssemblyLimits:
    memory_bytes: int = 512 * 1024 * 1024
    spill_dir: Path | None = None  # None: no spilling, a set beyond the cap is rejected
    expiry_s: float = 300.0
    max_message_bytes: int = 4 * 1024 * 1024 * 1024
    remembered_sets: int = 100_000


@dataclass(frozen=True)
class FragmentHeader:
    set_id: str
    index: int
    total: int
    start: int
    size: int  # bytes of the whole set
    sha256: str
    codec: str | None
    original_size: int
    message_id: str | None
    key_null: bool

    @classmethod
    def parse(cls, headers: h.Headers) -> FragmentHeader:
        """The fragment's coordinates, or ValueError naming what is wrong."""
        def need(name: str) -> str:
            value = h.header_value(headers, name)
            if value is None:
                raise ValueError(f"fragment header {name} is missing")
            return value

        def number(name: str) -> int:
            try:
                return int(need(name))
            except ValueError as exc:
                raise ValueError(f"fragment header {name}: {exc}") from None

        header = cls(
            set_id=need(oh.FRAGMENT_ID), index=number(oh.FRAGMENT_INDEX),
            total=number(oh.FRAGMENT_TOTAL), start=number(oh.FRAGMENT_OFFSET),
            size=number(oh.SIZE), sha256=need(oh.SHA256), codec=h.header_value(headers, oh.CODEC),
            original_size=h.header_int(headers, oh.ORIGINAL_SIZE) or number(oh.SIZE),
            message_id=h.header_value(headers, oh.MESSAGE_ID),
            key_null=h.header_value(headers, oh.KEY_NULL) == "1")
        if not 0 <= header.index < header.total:
            raise ValueError(f"fragment index {header.index} outside 0..{header.total - 1}")
        if header.size < 0 or header.start < 0:
            raise ValueError("negative fragment size or offset")
        return header

    def same_set(self, other: FragmentHeader) -> bool:
        return (self.total, self.size, self.sha256, self.codec, self.original_size) == (
            other.total, other.size, other.sha256, other.codec, other.original_size)


class _Spill:
    """A set assembled in a sparse file instead of memory."""

    def __init__(self, directory: Path, size: int):
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="set-", suffix=".part")
        self.fd, self.path, self.size = fd, Path(name), size
        os.ftruncate(fd, size)

    def write(self, start: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, start)
            view, start = view[written:], start + written

    def read(self, start: int = 0, length: int | None = None) -> bytearray:
        length = self.size - start if length is None else length
        out = bytearray(length)
        view, done = memoryview(out), 0
        while done < length:
            got = os.preadv(self.fd, [view[done:]], start + done)
            if got <= 0:
                raise OSError(f"short read from {self.path}")
            done += got
        return out

    def close(self) -> None:
        try:
            os.close(self.fd)
        finally:
            self.path.unlink(missing_ok=True)


@dataclass
class _Piece:
    record: Incoming  # value dropped once copied into the buffer
    start: int
    length: int


@dataclass
class _Set:
    header: FragmentHeader
    topic: str
    partition: int
    started: float
    buffer: bytearray | _Spill
    pieces: dict[int, _Piece] = field(default_factory=dict)
    filled: int = 0
    last_offset: int = -1
    # The SHA-256 is computed as contiguous bytes arrive (in memory), not all at the end.
    hasher: Any = field(default_factory=hashlib.sha256)
    hashed: int = 0
    starts: dict[int, int] = field(default_factory=dict)  # piece start -> length

    def hash_ahead(self) -> None:
        if not isinstance(self.buffer, bytearray):
            return
        view = memoryview(self.buffer)
        while self.hashed in self.starts:
            length = self.starts[self.hashed]
            if length == 0:
                break
            self.hasher.update(view[self.hashed:self.hashed + length])
            self.hashed += length
        view.release()

    def digest(self, data: bytes | bytearray) -> str:
        if self.hashed == self.header.size and isinstance(self.buffer, bytearray):
            return str(self.hasher.hexdigest())
        return hashlib.sha256(data).hexdigest()

    @property
    def first_offset(self) -> int:
        return min(p.record.offset for p in self.pieces.values())

    @property
    def in_memory(self) -> bool:
        return isinstance(self.buffer, bytearray)

    def slice(self, piece: _Piece) -> bytes:
        if isinstance(self.buffer, bytearray):
            return bytes(self.buffer[piece.start:piece.start + piece.length])
        return bytes(self.buffer.read(piece.start, piece.length))

    def records(self) -> list[Incoming]:
        """The fragments as they came (values rebuilt from the buffer), in offset order."""
        out = []
        for piece in sorted(self.pieces.values(), key=lambda p: p.record.offset):
            r = piece.record
            out.append(Incoming(r.topic, r.partition, r.offset, r.timestamp_ms, r.key,
                                self.slice(piece), r.headers))
        return out

    def release(self) -> None:
        if isinstance(self.buffer, _Spill):
            self.buffer.close()


@dataclass
class Outcome:
    """What one record (or an expiry sweep) led to."""

    delivered: list[Whole] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Sets that are no longer open (delivered, rejected, expired): their fragments' offsets
    # may now be committed.
    closed: list[str] = field(default_factory=list)
    held: str | None = None  # the record was buffered in this open set
    duplicate: bool = False


class Assembler:
    def __init__(self, limits: AssemblyLimits | None = None):
        self.limits = limits or AssemblyLimits()
        self.open: dict[str, _Set] = {}
        # set id -> how it ended ("delivered", or the reason it was rejected), newest last.
        self.finished: OrderedDict[str, str] = OrderedDict()
        self.memory_in_use = 0

    # ---- what callers look at ------------------------------------------------------------

    @property
    def sets_in_progress(self) -> int:
        return len(self.open)

    def open_in(self, topic: str, partition: int) -> dict[str, int]:
        """Open set id -> offset of its first fragment seen, for one partition."""
        return {sid: s.first_offset for sid, s in self.open.items()
                if s.topic == topic and s.partition == partition and s.pieces}

    # ---- feeding ---------------------------------------------------------------------------

    def add(self, record: Incoming, now: float | None = None) -> Outcome:
        now = time.monotonic() if now is None else now
        try:
            header = FragmentHeader.parse(record.headers)
        except ValueError as exc:
            return Outcome(rejected=[Rejected("poison", f"malformed fragment: {exc}", [record])])
        ended = self.finished.get(header.set_id)
        if ended is not None:
            if ended == "delivered":
                return Outcome(duplicate=True)
            return Outcome(rejected=[Rejected("dlq", f"fragment of a set that ended: {ended}",
                                              [record])])
        value = record.value or b""
        if header.start + len(value) > header.size:
            return Outcome(rejected=[Rejected("poison", "fragment bytes fall outside the set's "
                                              f"declared {header.size} bytes", [record])])
        current = self.open.get(header.set_id)
        if current is None:
            opened = self._open(header, record, now)
            if isinstance(opened, Rejected):
                self._finish(header.set_id, opened.reason)
                return Outcome(rejected=[opened], closed=[header.set_id])
            current = opened
        elif not current.header.same_set(header):
            return Outcome(rejected=[Rejected("poison", "fragment disagrees with its set's "
                                              "total, size, checksum or codec", [record])])
        if header.index in current.pieces:
            return Outcome(duplicate=True)
        if isinstance(current.buffer, bytearray):
            current.buffer[header.start:header.start + len(value)] = value
        else:
            current.buffer.write(header.start, value)
        current.pieces[header.index] = _Piece(
            Incoming(record.topic, record.partition, record.offset, record.timestamp_ms,
                     record.key, None, record.headers), header.start, len(value))
        current.filled += len(value)
        current.last_offset = record.offset
        current.starts.setdefault(header.start, len(value))
        current.hash_ahead()
        if len(current.pieces) < header.total:
            return Outcome(held=header.set_id)
        return self._complete(current)

    def _open(self, header: FragmentHeader, record: Incoming, now: float) -> _Set | Rejected:
        if header.size > self.limits.max_message_bytes:
            return Rejected("poison", f"fragment set declares {header.size} bytes, above the "
                            f"limit of {self.limits.max_message_bytes}", [record])
        buffer: bytearray | _Spill
        if self.memory_in_use + header.size <= self.limits.memory_bytes:
            buffer = bytearray(header.size)
            self.memory_in_use += header.size
        elif self.limits.spill_dir is not None:
            buffer = _Spill(self.limits.spill_dir, header.size)
        else:
            return Rejected("dlq", f"reassembly memory cap exceeded: a set of {header.size} "
                            f"bytes with {self.memory_in_use} of "
                            f"{self.limits.memory_bytes} bytes in use, and spilling is off",
                            [record])
        opened = _Set(header, record.topic, record.partition, now, buffer)
        self.open[header.set_id] = opened
        return opened

    def _complete(self, done: _Set) -> Outcome:
        header = done.header
        pieces = sorted(done.pieces.values(), key=lambda p: p.start)
        position = 0
        for piece in pieces:
            if piece.start != position:
                return self._reject(done, "poison", "fragments overlap or leave a gap")
            position += piece.length
        if position != header.size:
            return self._reject(done, "poison", f"fragments carry {position} bytes, the set "
                                f"declares {header.size}")
        data: bytes | bytearray = done.buffer if isinstance(done.buffer, bytearray) \
            else done.buffer.read()
        if done.digest(data) != header.sha256:
            return self._reject(done, "poison", "reassembled message does not match its "
                                "SHA-256")
        if header.codec:
            try:
                data = codecs.decompress(header.codec, data, header.original_size)
            except codecs.CodecError as exc:
                return self._reject(done, "poison", str(exc))
        first = done.pieces.get(0) or pieces[0]
        whole = Whole(
            topic=done.topic, partition=done.partition, offset=done.last_offset,
            first_offset=done.first_offset, timestamp_ms=first.record.timestamp_ms,
            key=None if header.key_null else first.record.key, value=data,
            headers=oh.original_headers(first.record.headers), message_id=header.message_id,
            strategy=oh.FRAGMENTATION,
            sources=[p.record.position for p in done.pieces.values()])
        self._close(done, "delivered")
        return Outcome(delivered=[whole], closed=[header.set_id])

    def _reject(self, done: _Set, destination: str, reason: str) -> Outcome:
        rejected = Rejected(destination, reason, done.records())
        self._close(done, reason)
        return Outcome(rejected=[rejected], closed=[done.header.set_id])

    def _close(self, done: _Set, how: str) -> None:
        self.open.pop(done.header.set_id, None)
        if done.in_memory:
            self.memory_in_use -= done.header.size
        done.release()
        self._finish(done.header.set_id, how)

    def _finish(self, set_id: str, how: str) -> None:
        self.finished[set_id] = how
        self.finished.move_to_end(set_id)
        while len(self.finished) > self.limits.remembered_sets:
            self.finished.popitem(last=False)

    # ---- time and rebalances --------------------------------------------------------------

    def expire(self, now: float | None = None) -> Outcome:
        """Sets older than the expiry go to the dead-letter topic with what arrived of them."""
        now = time.monotonic() if now is None else now
        outcome = Outcome()
        for stale in [s for s in self.open.values()
                      if now - s.started >= self.limits.expiry_s]:
            have = sorted(stale.pieces)
            reason = (f"fragment set {stale.header.set_id} incomplete after "
                      f"{self.limits.expiry_s:g} s: {len(have)} of {stale.header.total} "
                      f"fragments arrived")
            if have and have[0] != 0:
                reason += " (the first never did: it may precede the committed offset)"
            done = self._reject(stale, "dlq", reason)
            outcome.rejected += done.rejected
            outcome.closed += done.closed
        return outcome

    def forget_partition(self, topic: str, partition: int) -> None:
        """A revoked partition's open sets are dropped (its next owner reads them again from
        the committed offset, which never passed their first fragment)."""
        for sid in [sid for sid, s in self.open.items()
                    if s.topic == topic and s.partition == partition]:
            dropped = self.open.pop(sid)
            if dropped.in_memory:
                self.memory_in_use -= dropped.header.size
            dropped.release()

    def close(self) -> None:
        for dropped in self.open.values():
            dropped.release()
        self.open.clear()
        self.memory_in_use = 0
