"""Fuzzing the parts that read bytes from outside: the failure intake (and through it the Avro
codec), the fragment assembler and the claim-check reference resolver. Random and mutated
input must never crash or hang them; whatever they cannot accept is rejected with a reason
(for the intake and the assembler, a reason that sends the record to poison).

FUZZ_EXAMPLES (default 300) sets the examples per property; docs/fuzzing.md has a big run."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.avro.catalog import SchemaCatalog
from app.avro.codec import AvroCodec, LockedSchemaIds
from app.contracts import headers as h
from app.contracts.failure_event import SUBJECT, new_failure_event
from app.contracts.records import OutRecord
from app.oversize import headers as oh
from app.oversize import policy as op
from app.oversize.assembler import Assembler, AssemblyLimits
from app.oversize.encoder import encode
from app.oversize.records import Incoming
from app.oversize.reference import Reference, ReferenceRejected, StoreLocation, check
from app.pipeline.intake import Accepted, Quarantined, RawRecord, receive

# The module fixture at the end counts what the tests of this file tried: under pytest-xdist
# they run in one process.
pytestmark = pytest.mark.xdist_group("test_fuzz_inputs")

REPO = Path(__file__).resolve().parents[3]
CODEC = AvroCodec(LockedSchemaIds(SchemaCatalog.load(REPO / "schemas")))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: dict[str, int] = {}

NOW_MS = 1_700_000_000_000


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


def valid_event_bytes() -> bytes:
    event = new_failure_event(
        kind="CONSUMER_CRASHED", error_type="oom", service="fuzz", severity="FATAL",
        work_item_id="w1", failed_record={"topic": "t", "partition": 0, "offset": 1,
                                          "key": b"k", "value": b"x" * 40,
                                          "headers": [{"key": "a", "value": b"b"}]})
    return CODEC.encode(SUBJECT, event)


VALID = valid_event_bytes()
headers_strategy = st.lists(
    st.tuples(st.text(max_size=300), st.one_of(st.none(), st.binary(max_size=3000))),
    max_size=60)


def record(value: bytes | None, headers: list[tuple[str, bytes | None]]) -> RawRecord:
    return RawRecord("recovery.failures", 0, 7, 1_700_000_000_000, b"k", value, headers)


def assert_intake_outcome(result: Accepted | Quarantined) -> None:
    if isinstance(result, Quarantined):
        assert result.reason.strip()
        assert h.header_value(result.headers, h.REASON) == result.reason
    else:
        assert isinstance(result.event, dict) and result.incident_id


@FUZZ
@given(value=st.one_of(st.none(), st.binary(max_size=4000)), headers=headers_strategy)
def test_intake_never_crashes_on_random_bytes(value: bytes | None, headers) -> None:
    tried("intake random")
    assert_intake_outcome(receive(record(value, headers), CODEC, now_ms=NOW_MS))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        how = draw(st.sampled_from(["truncate", "flip", "insert", "schema_id", "magic",
                                    "varint"]))
        if how == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif how == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif how == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif how == "schema_id" and len(data) >= 5:
            data[1:5] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
        elif how == "magic" and data:
            data[0] = draw(st.integers(1, 255))
        elif how == "varint" and len(data) > 6:
            # A huge zig-zag length or count where the body starts: a declared size far
            # beyond the bytes that follow.
            at = draw(st.integers(5, len(data) - 1))
            data[at:at] = bytes([0xFF] * draw(st.integers(1, 9))) + b"\x01"
    return bytes(data)


@FUZZ
@given(value=mutated(), headers=headers_strategy)
def test_intake_never_crashes_on_mutated_avro(value: bytes, headers) -> None:
    tried("intake mutated")
    result = receive(record(value, headers), CODEC, now_ms=NOW_MS)
    assert_intake_outcome(result)
    if len(value) >= 5 and value[0] != 0:
        assert isinstance(result, Quarantined) and "magic byte" in result.reason


def test_intake_named_reasons_for_the_classic_bad_inputs() -> None:
    unknown_id = b"\x00" + struct.pack(">I", 999_999) + VALID[5:]
    cases = {b"": "empty value", VALID[:3]: "shorter than the 5-byte",
             b"\x01" + VALID[1:]: "magic byte 1", unknown_id: "unknown schema id 999999",
             VALID[:-7]: "malformed Avro body", VALID + b"\x00": "trailing bytes"}
    for value, reason in cases.items():
        result = receive(record(value, [("x" * 10_000, b"y" * 100_000)] * 50), CODEC, now_ms=NOW_MS)
        assert isinstance(result, Quarantined), value
        assert reason in result.reason, (value, result.reason)


# ---- fragment assembler ------------------------------------------------------------------

numbers = st.one_of(st.integers(-2**70, 2**70), st.integers(-3, 50))
number_text = st.one_of(numbers.map(str), st.text(max_size=12))


@st.composite
def fragment_headers(draw) -> list[tuple[str, bytes | None]]:
    fields = {
        oh.FRAGMENT_ID: draw(st.sampled_from(["set-a", "set-b", ""])),
        oh.FRAGMENT_INDEX: draw(number_text), oh.FRAGMENT_TOTAL: draw(number_text),
        oh.FRAGMENT_OFFSET: draw(number_text), oh.SIZE: draw(number_text),
        oh.SHA256: draw(st.one_of(st.just("0" * 64), st.text(max_size=70))),
        oh.CODEC: draw(st.sampled_from(["", "zstd", "lz4", "gzip", "rot13"])),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    headers = [(name, fields[name].encode()) for name in chosen]
    headers += draw(st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)),
                             max_size=5))
    return headers


@FUZZ
@given(batch=st.lists(st.tuples(fragment_headers(), st.binary(max_size=64)), max_size=12),
       spill=st.booleans())
def test_assembler_never_crashes_on_forged_fragments(batch, spill, tmp_path_factory) -> None:
    tried("assembler")
    limits = AssemblyLimits(memory_bytes=4096, expiry_s=60, max_message_bytes=1 << 20,
                            spill_dir=tmp_path_factory.mktemp("spill") if spill else None)
    assembler = Assembler(limits)
    try:
        for offset, (headers, value) in enumerate(batch):
            outcome = assembler.add(Incoming("t", 0, offset, None, b"k", value, headers),
                                    now=0.0)
            for rejected in outcome.rejected:
                assert rejected.destination in ("poison", "dlq") and rejected.reason.strip()
            for whole in outcome.delivered:
                # Only a set whose bytes match its declared checksum and size is delivered.
                assert whole.value is not None
                assert hashlib.sha256(whole.value).hexdigest() == h.header_value(
                    headers, oh.SHA256)
                assert str(len(whole.value)) == h.header_value(headers, oh.SIZE)
        expired = assembler.expire(now=10_000.0)
        assert all(r.reason.strip() for r in expired.rejected)
        assert assembler.sets_in_progress == 0
    finally:
        assembler.close()


FRAGMENTED = op.TopicPolicy(force=oh.FRAGMENTATION)


@st.composite
def fragment_sets(draw) -> tuple[dict[str, bytes], list[tuple[str, Incoming]], set[str]]:
    """Real fragment sets (the encoder's, so their checksums match), 1-3 of them, shuffled
    together, some fragments repeated, and some sets tampered with (a flipped byte, a
    dropped fragment or a forged checksum). Returns the payloads by message id, the feed
    (message id, record) and the tampered ids."""
    payloads: dict[str, bytes] = {}
    feed: list[tuple[str, OutRecord]] = []
    tampered: set[str] = set()
    for n in range(draw(st.integers(1, 3))):
        payload = draw(st.binary(min_size=1, max_size=6000))
        message_id = f"m{n}"
        records = encode("t", b"k", payload, [("app", b"x")], limit=1700,
                         policy=FRAGMENTED, message_id=message_id).records
        assert len(records) >= 1
        payloads[message_id] = payload
        records = list(records)
        if len(records) > 1:
            harm = draw(st.sampled_from(["none", "none", "flip", "drop", "checksum"]))
            at = draw(st.integers(0, len(records) - 1))
            if harm == "flip":
                value = bytearray(records[at].value)
                value[draw(st.integers(0, len(value) - 1))] ^= 1
                records[at] = OutRecord("t", records[at].key, bytes(value), records[at].headers)
            elif harm == "drop":
                del records[at]
            elif harm == "checksum":
                records = [OutRecord("t", r.key, r.value, h.with_context(
                    r.headers, {oh.SHA256: "0" * 64})) for r in records]
            if harm != "none":
                tampered.add(message_id)
        records += draw(st.lists(st.sampled_from(records), max_size=3))  # repeats
        feed += [(message_id, r) for r in records]
    order = draw(st.permutations(range(len(feed))))
    incoming = [(feed[i][0], Incoming("t", 0, offset, None, feed[i][1].key,
                                      bytes(feed[i][1].value), list(feed[i][1].headers)))
                for offset, i in enumerate(order)]
    return payloads, incoming, tampered


@FUZZ
@given(sets=fragment_sets(), spill=st.booleans())
def test_assembler_delivers_matching_sets_once_and_only_them(sets, spill,
                                                             tmp_path_factory) -> None:
    tried("assembler, real sets")
    payloads, feed, tampered = sets
    # Room for every set: spilled beyond a 4 KB cap, or a cap that holds them all.
    limits = AssemblyLimits(memory_bytes=4096 if spill else 1 << 20, expiry_s=60,
                            max_message_bytes=1 << 20,
                            spill_dir=tmp_path_factory.mktemp("spill") if spill else None)
    assembler = Assembler(limits)
    delivered: dict[str, list[bytes]] = {}
    try:
        for message_id, incoming in feed:
            outcome = assembler.add(incoming, now=0.0)
            for whole in outcome.delivered:
                value = bytes(whole.value or b"")
                # The bytes hash to the SHA-256 the set declares, and are the payload sent.
                assert hashlib.sha256(value).hexdigest() == h.header_value(
                    incoming.headers, oh.SHA256)
                assert value == payloads[message_id]
                assert whole.key == b"k" and whole.headers == [("app", b"x")]
                delivered.setdefault(message_id, []).append(value)
            for rejected in outcome.rejected:
                assert rejected.destination in ("poison", "dlq") and rejected.reason.strip()
        expired = assembler.expire(now=10_000.0)
        assert all(r.reason.strip() for r in expired.rejected)
        assert assembler.sets_in_progress == 0
    finally:
        assembler.close()
    # Every untampered set delivered exactly once (repeats included); no tampered one.
    assert {m: len(v) for m, v in delivered.items()} == {
        m: 1 for m in payloads if m not in tampered}


def test_assembler_rejects_out_of_range_indexes_and_totals() -> None:
    assembler = Assembler(AssemblyLimits(memory_bytes=1 << 20))
    base = {oh.FRAGMENT_ID: "s", oh.FRAGMENT_OFFSET: "0", oh.SIZE: "4", oh.SHA256: "0" * 64}
    for index, total, reason in (("-1", "2", "outside"), ("2", "2", "outside"),
                                 ("0", "-5", "outside"), ("0", str(2**80), "outside"),
                                 ("x", "2", "fragment header")):
        headers = [(k, v.encode()) for k, v in {**base, oh.FRAGMENT_INDEX: index,
                                                  oh.FRAGMENT_TOTAL: total}.items()]
        tried("fragment index/total")  # counted like the generated inputs (the module's
        # report asserts something was tried in each process, and xdist may run this alone)
        outcome = assembler.add(Incoming("t", 0, 1, None, None, b"abcd", headers), now=0.0)
        if total == str(2**80):
            # An absurd total with index 0 is a well-formed header: the set opens and can
            # never complete, so it expires with a reason instead of hanging anywhere.
            expired = assembler.expire(now=10_000.0)
            assert outcome.rejected or expired.rejected
            continue
        [rejected] = outcome.rejected
        assert rejected.destination == "poison" and reason in rejected.reason


# ---- claim-check references ----------------------------------------------------------------

KEY = b"fuzz-signing-key"
LOCATION = StoreLocation.parse("file:///srv/objects", "claims")
SHA = hashlib.sha256(b"payload").hexdigest()
GOOD_URL = LOCATION.url_for(SHA)
hostile_urls = st.one_of(
    st.text(max_size=120),
    st.builds(lambda a, b: f"{a}{b}", st.sampled_from([
        "file:///srv/objects/claims/", "file:///srv/objects/", "file://evil.host/srv/objects/",
        "s3://other-bucket/claims/", "file:///srv/objects/claims/../../etc/",
        "file:///etc/", "http://169.254.169.254/", "file:///srv/objects/claims/%2e%2e/",
        "file:///srv/objects/claimsX/", "file:///srv/objects/claims//"]),
        st.sampled_from([f"{SHA[:2]}/{SHA}", SHA, "passwd", f"../{SHA[:2]}/{SHA}", "",
                         f"{SHA[:2]}/{SHA}?x=1", f"{SHA[:2]}/{SHA}#f"])))


@FUZZ
@given(url=hostile_urls, sign=st.sampled_from(["right", "wrong", "none"]),
       size=st.integers(-5, 2**40))
def test_only_signed_references_to_the_content_address_inside_the_prefix_are_read(
        url: str, sign: str, size: int) -> None:
    tried("reference")
    reference = Reference(url, SHA, size)
    if sign == "right":
        reference = reference.signed(KEY)
    elif sign == "wrong":
        reference = Reference(url, SHA, size, signature=hmac.new(
            b"forger", reference.signed_text(), hashlib.sha256).hexdigest())
    try:
        object_key = check(reference, LOCATION, KEY, max_size=1 << 30)
    except ReferenceRejected as exc:
        assert str(exc).strip()
        return
    assert sign == "right" and url == GOOD_URL and 0 <= size <= 1 << 30
    assert object_key == LOCATION.key_for(SHA) and object_key.startswith("claims/")


@FUZZ
@given(document=st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["claim_check", "url", "sha256", "size", "codec",
                                     "original_size", "sig"]),
                    st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=80),
                              st.floats(allow_nan=False), st.lists(st.integers(0, 9), max_size=3)))
    .map(orjson.dumps)))
def test_reference_parsing_rejects_garbage_with_a_reason(document: bytes) -> None:
    tried("reference parse")
    try:
        reference = Reference.from_bytes(document)
    except ReferenceRejected as exc:
        assert str(exc).strip()
        return
    assert len(reference.sha256) == 64
    try:
        check(reference, LOCATION, KEY, max_size=1 << 30)
    except ReferenceRejected:
        return
    raise AssertionError(f"an unsigned document was accepted: {document!r}")


@pytest.fixture(scope="module", autouse=True)
def report_how_many_inputs_were_tried() -> Iterator[None]:
    # After the last test of this file that ran in this process (as the pipeline fuzz does:
    # a report test of its own once saw nothing tried, in a gate): prints the counts for
    # docs/fuzzing.md, and every test here counts what it tries, so none counted is a broken
    # generator.
    yield
    print("\nfuzz inputs tried:", ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())))
    assert sum(TRIED.values()) > 0
