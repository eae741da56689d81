"""Making an oversized payload fit its topic: compression, fragmentation or a claim-check
reference, tried in the policy's order. Produces the records to send; sending them is the
caller's (a confluent-kafka producer in the client API, the worker's producer)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

from app.contracts import headers as h
from app.contracts.records import OutRecord
from app.oversize import codecs
from app.oversize import headers as oh
from app.oversize import policy as p
from app.oversize.store import ClaimCheckStore, StoreError

# Fragment-set ids are derived from the message id, so publishing one message again (a
# retried producer, a redelivered failure report) gives the very same set, delivered once.
FRAGMENT_NAMESPACE = uuid.UUID("6f0a4a5e-3b8c-4c1e-9a57-0b5d3f6c2e11")


class MessageTooLarge(Exception):
    """No strategy made the payload fit; `attempts` says what was tried and why it failed."""

    def __init__(self, topic: str, size: int, limit: int, attempts: list[p.Attempt]):
        self.topic = topic
        self.size = size
        self.limit = limit
        self.attempts = attempts
        tried = "; ".join(str(a) for a in attempts) or "none (all disabled)"
        super().__init__(f"message of {size} bytes does not fit topic {topic} (limit {limit} "
                         f"bytes); strategies attempted: {tried}")

    @property
    def strategies_attempted(self) -> list[str]:
        return [a.strategy for a in self.attempts]


@dataclass
class Encoded:
    strategy: str | None  # None: the record fits as it is
    records: list[OutRecord]
    message_id: str
    attempts: list[p.Attempt] = field(default_factory=list)
    codec: str | None = None
    stored_url: str | None = None

    @property
    def size(self) -> int:
        return sum(len(r.value or b"") for r in self.records)


def fragment_set_id(message_id: str) -> str:
    return uuid.uuid5(FRAGMENT_NAMESPACE, message_id).hex


def _b(value: object) -> bytes:
    return str(value).encode()


def encode(topic: str, key: bytes | None, value: bytes | bytearray | memoryview,
           headers: h.HeadersArg = None, *, limit: int, policy: p.TopicPolicy,
           message_id: str | None = None, store: ClaimCheckStore | None = None) -> Encoded:
    original = h.normalize(headers)
    message_id = message_id or uuid.uuid4().hex
    size = len(value)
    if not p.must_transform(p.record_size(key, size, original), limit, policy):
        return Encoded(None, [OutRecord(topic, key, value, original)], message_id)  # type: ignore[arg-type]
    attempts = p.Attempts()
    common = [(oh.MESSAGE_ID, message_id.encode()), (oh.ORIGINAL_SIZE, _b(size))]
    compressed: tuple[str, bytes] | None = None
    for strategy in policy.candidates():
        if strategy == oh.COMPRESSION:
            found, compressed = _compress(topic, key, value, original, common, limit, policy,
                                          attempts)
            if found is not None:
                found.message_id = message_id
                found.attempts = attempts.items
                return found
            continue
        whole, codec = value, None
        if compressed is None and oh.COMPRESSION not in policy.disabled and policy.codecs \
                and policy.force is None:
            compressed = _compress_if_worth(value, policy.codecs[0])
        if compressed is not None and p.worth_compressing_whole(size, len(compressed[1])):
            codec, whole = compressed
        if strategy == oh.FRAGMENTATION:
            result = _fragment(topic, key, whole, codec, original, common, limit, policy,
                               message_id, attempts)
        else:
            result = _store(topic, key, whole, codec, size, original, common, limit, store,
                            attempts)
        if result is not None:
            result.message_id = message_id
            result.attempts = attempts.items
            return result
    raise MessageTooLarge(topic, size, limit, attempts.items)


def _compress(topic: str, key: bytes | None, value: bytes | bytearray | memoryview,
              original: h.Headers, common: h.Headers, limit: int, policy: p.TopicPolicy,
              attempts: p.Attempts) -> tuple[Encoded | None, tuple[str, bytes] | None]:
    own = [*common, (oh.STRATEGY, oh.COMPRESSION.encode()), (oh.CODEC, b"gzip"),
           (oh.SHA256, b"0" * 64), (oh.SIZE, _b(len(value)))]
    budget = limit - p.record_size(key, 0, [*original, *own])
    best: tuple[str, bytes] | None = None
    outcomes: list[str] = []
    for codec in policy.codecs:
        if policy.force != oh.COMPRESSION and codecs.is_sampled(len(value)):
            estimate = codecs.estimated_size(codec, value)
            if not p.codec_worth_trying(estimate, budget, policy):
                outcomes.append(f"{codec}: about {estimate} bytes by a sample, "
                                f"{budget} allowed")
                continue
        out = codecs.compress(codec, value)
        if best is None or len(out) < len(best[1]):
            best = (codec, out)
        if len(out) <= budget:
            attempts.add(oh.COMPRESSION, f"used {codec}: {len(value)} -> {len(out)} bytes")
            headers = h.with_context(original, {
                **dict(common), oh.STRATEGY: oh.COMPRESSION, oh.CODEC: codec,
                oh.SHA256: hashlib.sha256(out).hexdigest(), oh.SIZE: len(out)})
            return Encoded(oh.COMPRESSION, [OutRecord(topic, key, out, headers)], "",
                           codec=codec), best
        outcomes.append(f"{codec}: {len(out)} bytes, {budget} allowed")
    attempts.add(oh.COMPRESSION, "; ".join(outcomes) or "no codec configured")
    return None, best


def _compress_if_worth(value: bytes | bytearray | memoryview, codec: str
                       ) -> tuple[str, bytes] | None:
    """Compress the whole before fragmenting or storing it only when a sample shows that
    it pays: incompressible payloads are not run through a codec for nothing."""
    if codecs.estimated_size(codec, value) > len(value) * p.WORTH_COMPRESSING:
        return None
    return codec, codecs.compress(codec, value)


def _fragment(topic: str, key: bytes | None, whole: bytes | bytearray | memoryview,
              codec: str | None, original: h.Headers, common: h.Headers, limit: int,
              policy: p.TopicPolicy, message_id: str, attempts: p.Attempts) -> Encoded | None:
    set_id = fragment_set_id(message_id)
    digest = hashlib.sha256(whole).hexdigest()
    fragment_key = key if key is not None else set_id.encode()
    size = len(whole)
    shared = [*common, (oh.STRATEGY, oh.FRAGMENTATION.encode()), (oh.FRAGMENT_ID, set_id.encode()),
              (oh.SHA256, digest.encode()), (oh.SIZE, _b(size))]
    if codec:
        shared.append((oh.CODEC, codec.encode()))
    if key is None:
        shared.append((oh.KEY_NULL, b"1"))
    widest = [(oh.FRAGMENT_INDEX, _b(size)), (oh.FRAGMENT_TOTAL, _b(size)),
              (oh.FRAGMENT_OFFSET, _b(size))]
    overhead = p.record_size(fragment_key, 0, [*original, *shared, *widest])
    layout = p.fragment_layout(size, limit, overhead, policy)
    if isinstance(layout, p.NoLayout):
        attempts.add(oh.FRAGMENTATION, layout.reason)
        return None
    view = memoryview(whole)
    records = []
    for index in range(layout.count):
        start = index * layout.chunk
        own = [*shared, (oh.FRAGMENT_INDEX, _b(index)), (oh.FRAGMENT_TOTAL, _b(layout.count)),
               (oh.FRAGMENT_OFFSET, _b(start))]
        records.append(OutRecord(topic, fragment_key, view[start:start + layout.chunk],  # type: ignore[arg-type]
                                 [*original, *own] if index == 0 else own))
    attempts.add(oh.FRAGMENTATION, f"used: {layout.count} fragments of up to {layout.chunk} "
                 f"bytes" + (f" ({codec})" if codec else ""))
    return Encoded(oh.FRAGMENTATION, records, message_id, codec=codec)


def _store(topic: str, key: bytes | None, whole: bytes | bytearray | memoryview,
           codec: str | None, original_size: int, original: h.Headers, common: h.Headers,
           limit: int, store: ClaimCheckStore | None, attempts: p.Attempts) -> Encoded | None:
    if store is None:
        attempts.add(oh.EXTERNAL_STORAGE, "no object store configured")
        return None
    try:
        reference = store.put(whole, codec=codec, original_size=original_size)
    except (StoreError, OSError) as exc:
        attempts.add(oh.EXTERNAL_STORAGE, f"store failed: {exc}")
        return None
    value = reference.to_bytes()
    extra: dict[str, object | None] = {**dict(common), oh.STRATEGY: oh.EXTERNAL_STORAGE,
                                       oh.CODEC: codec}
    headers = h.with_context(original, extra)
    if p.record_size(key, len(value), headers) > limit:
        attempts.add(oh.EXTERNAL_STORAGE, f"even the reference record exceeds {limit} bytes")
        return None
    attempts.add(oh.EXTERNAL_STORAGE, f"used: {reference.url}")
    return Encoded(oh.EXTERNAL_STORAGE, [OutRecord(topic, key, value, headers)], "",
                   codec=codec, stored_url=reference.url)
