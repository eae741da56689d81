"""One entry point for whatever a consumer reads: plain records pass through; a compressed
record is decompressed; a claim-check reference is checked, fetched and verified; fragments
go to the assembler. Whole messages are given back once per original event id; what cannot
be read is rejected to the poison or dead-letter topic with a reason."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from app.contracts import headers as h
from app.oversize import codecs
from app.oversize import headers as oh
from app.oversize.assembler import Assembler, AssemblyLimits, Outcome
from app.oversize.records import Incoming, Rejected, Whole
from app.oversize.reference import Reference, ReferenceRejected
from app.oversize.store import ClaimCheckStore, StoreError


class Reassembler:
    def __init__(self, limits: AssemblyLimits | None = None,
                 store: ClaimCheckStore | None = None, remembered_messages: int = 100_000):
        self.assembler = Assembler(limits)
        self.store = store
        self.remembered = remembered_messages
        self.delivered_ids: OrderedDict[str, None] = OrderedDict()

    @property
    def sets_in_progress(self) -> int:
        return self.assembler.sets_in_progress

    def process(self, record: Incoming, now: float | None = None) -> Outcome:
        strategy = oh.strategy_of(record.headers)
        if strategy is None:
            return Outcome(delivered=[_plain(record)])
        if strategy == oh.FRAGMENTATION:
            outcome = self.assembler.add(record, now)
        elif strategy == oh.COMPRESSION:
            outcome = _single(record, self._decompressed)
        elif strategy == oh.EXTERNAL_STORAGE:
            outcome = _single(record, self._fetched)
        else:
            outcome = Outcome(rejected=[Rejected("poison", f"unknown oversize strategy "
                                                 f"{strategy!r}", [record])])
        return self._once(outcome)

    def expire(self, now: float | None = None) -> Outcome:
        return self.assembler.expire(time.monotonic() if now is None else now)

    def forget_partition(self, topic: str, partition: int) -> None:
        self.assembler.forget_partition(topic, partition)

    def close(self) -> None:
        self.assembler.close()

    def _once(self, outcome: Outcome) -> Outcome:
        kept = []
        for whole in outcome.delivered:
            if whole.message_id is not None:
                if whole.message_id in self.delivered_ids:
                    outcome.duplicate = True
                    continue
                self.delivered_ids[whole.message_id] = None
                if len(self.delivered_ids) > self.remembered:
                    self.delivered_ids.popitem(last=False)
            kept.append(whole)
        outcome.delivered = kept
        return outcome

    def _decompressed(self, record: Incoming) -> Whole:
        codec = h.header_value(record.headers, oh.CODEC)
        size = h.header_int(record.headers, oh.ORIGINAL_SIZE)
        if codec is None or size is None:
            raise ValueError("compressed record without its codec or original size header")
        value = record.value or b""
        digest = h.header_value(record.headers, oh.SHA256)
        if digest is not None and hashlib.sha256(value).hexdigest() != digest:
            raise ValueError("compressed record does not match its SHA-256")
        return _whole(record, codecs.decompress(codec, value, size), oh.COMPRESSION)

    def _fetched(self, record: Incoming) -> Whole:
        reference = Reference.from_bytes(record.value)
        if self.store is None:
            raise StoreError("a claim-check reference arrived but no object store is configured")
        data: bytes = self.store.fetch(reference)
        if reference.codec:
            data = codecs.decompress(reference.codec, data,
                                     reference.original_size if reference.original_size
                                     is not None else -1)
        return _whole(record, data, oh.EXTERNAL_STORAGE)


def _single(record: Incoming, read: object) -> Outcome:
    try:
        whole = read(record)  # type: ignore[operator]
    except (ReferenceRejected, codecs.CodecError, ValueError) as exc:
        return Outcome(rejected=[Rejected("poison", str(exc), [record])])
    except (StoreError, OSError) as exc:
        return Outcome(rejected=[Rejected("dlq", f"object store: {exc}", [record])])
    return Outcome(delivered=[whole])


def _plain(record: Incoming) -> Whole:
    return Whole(record.topic, record.partition, record.offset, record.offset,
                 record.timestamp_ms, record.key, record.value, record.headers, None, None,
                 [record.position])


def _whole(record: Incoming, value: bytes, strategy: str) -> Whole:
    return Whole(record.topic, record.partition, record.offset, record.offset,
                 record.timestamp_ms, record.key, value, oh.original_headers(record.headers),
                 h.header_value(record.headers, oh.MESSAGE_ID), strategy, [record.position])
