import hashlib
import os
import time

import pytest

from app.oversize.reference import Reference, ReferenceRejected, StoreLocation, check
from app.oversize.store import ClaimCheckStore, FileStore, open_store

KEY = b"signing-key"
SHA = hashlib.sha256(b"payload").hexdigest()


class CountingStore(FileStore):
    def __init__(self, root):
        super().__init__(root)
        self.gets: list[str] = []

    def get(self, key):
        self.gets.append(key)
        return super().get(key)


def s3() -> StoreLocation:
    return StoreLocation.parse("s3://claims", "checks/")


def signed(url: str, sha: str = SHA, size: int = 7, key: bytes = KEY) -> Reference:
    return Reference(url, sha, size).signed(key)


def test_location_parsing_and_content_address():
    location = s3()
    assert location.key_for(SHA) == f"checks/{SHA[:2]}/{SHA}"
    assert location.url_for(SHA) == f"s3://claims/checks/{SHA[:2]}/{SHA}"
    nested = StoreLocation.parse("s3://claims/base", "checks")
    assert nested.key_for(SHA).startswith("base/checks/")
    assert StoreLocation.parse("file:///var/x", "").key_for(SHA) == f"{SHA[:2]}/{SHA}"
    with pytest.raises(ValueError):
        StoreLocation.parse("http://x", "")
    with pytest.raises(ValueError):
        StoreLocation.parse("s3://claims", "a/../b")


def test_a_signed_reference_to_the_content_address_is_accepted():
    location = s3()
    assert check(signed(location.url_for(SHA)), location, KEY, 100) == location.key_for(SHA)


def test_reference_survives_its_byte_form():
    ref = signed(s3().url_for(SHA))
    assert Reference.from_bytes(ref.to_bytes()) == ref


@pytest.mark.parametrize("url, why", [
    (f"s3://other-bucket/checks/{SHA[:2]}/{SHA}", "bucket"),
    (f"file:///checks/{SHA[:2]}/{SHA}", "file://"),
    (f"s3://claims/elsewhere/{SHA[:2]}/{SHA}", "outside the prefix"),
    (f"s3://claims/checks/../secrets/{SHA}", "'..'"),
    (f"s3://claims/checks/{SHA[:2]}/{SHA}?versionId=1", "query"),
    (f"s3://claims/checks/%2e%2e/{SHA}", "escapes"),
    (f"s3://claims/checks/zz/{SHA}", "content address"),
])
def test_references_outside_the_store_are_rejected_even_when_signed(url, why):
    with pytest.raises(ReferenceRejected, match=why):
        check(signed(url), s3(), KEY, 100)


def test_a_forged_reference_inside_the_prefix_is_rejected():
    location = s3()
    forged = Reference(location.url_for(SHA), SHA, 7, signature="0" * 64)
    with pytest.raises(ReferenceRejected, match="signature"):
        check(forged, location, KEY, 100)
    with pytest.raises(ReferenceRejected, match="signature"):
        check(Reference(location.url_for(SHA), SHA, 7), location, KEY, 100)
    with pytest.raises(ReferenceRejected, match="signature"):
        check(signed(location.url_for(SHA), key=b"another key"), location, KEY, 100)


def test_tampered_fields_break_the_signature():
    location = s3()
    good = signed(location.url_for(SHA))
    other = hashlib.sha256(b"other").hexdigest()
    tampered = Reference(location.url_for(other), other, good.size, signature=good.signature)
    with pytest.raises(ReferenceRejected, match="signature"):
        check(tampered, location, KEY, 100)


def test_file_references_name_no_host_and_stay_in_the_directory(tmp_path):
    location = StoreLocation.parse(f"file://{tmp_path}", "cc/")
    good = location.url_for(SHA)
    assert check(signed(good), location, KEY, 100)
    with pytest.raises(ReferenceRejected, match="host"):
        check(signed(good.replace("file://", "file://evil.example")), location, KEY, 100)
    with pytest.raises(ReferenceRejected, match="outside"):
        check(signed(f"file:///etc/cc/{SHA[:2]}/{SHA}"), location, KEY, 100)


def test_oversized_reference_is_rejected():
    with pytest.raises(ReferenceRejected, match="exceeds"):
        check(signed(s3().url_for(SHA), size=10**9), s3(), KEY, 100)


@pytest.mark.parametrize("value", [b"", b"{}", b"not json", b'{"claim_check":1,"url":"x"}',
                                   b'{"claim_check":1,"url":"x","sha256":"XYZ","size":1}'])
def test_malformed_reference_bytes(value):
    with pytest.raises(ReferenceRejected):
        Reference.from_bytes(value)


def test_store_round_trip_and_verification(tmp_path):
    store = open_store(f"file://{tmp_path}", "cc/", signing_key=KEY)
    payload = os.urandom(10_000)
    reference = store.put(payload)
    assert store.fetch(Reference.from_bytes(reference.to_bytes())) == payload
    # Overwrite the object: a fetched object that does not match its SHA-256 is refused.
    (tmp_path / store.location.key_for(reference.sha256)).write_bytes(b"x" * len(payload))
    with pytest.raises(ReferenceRejected, match="SHA-256"):
        store.fetch(reference)


def test_a_rejected_reference_is_never_fetched(tmp_path):
    backend = CountingStore(tmp_path)
    store = ClaimCheckStore(StoreLocation.parse(f"file://{tmp_path}", "cc/"), backend,
                            signing_key=KEY)
    real = store.put(b"payload")
    forged = Reference(real.url, real.sha256, real.size, signature="f" * 64)
    with pytest.raises(ReferenceRejected):
        store.fetch(forged)
    outside = Reference("file:///etc/passwd", SHA, 7).signed(KEY)
    with pytest.raises(ReferenceRejected):
        store.fetch(outside)
    assert backend.gets == []
    assert store.fetch(real) == b"payload" and len(backend.gets) == 1


def test_file_store_refuses_keys_resolving_outside_its_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ReferenceRejected):
        FileStore(root).get("link/secret")


def test_signing_key_never_appears_in_the_store_repr(tmp_path):
    store = open_store(f"file://{tmp_path}", "", signing_key=b"super-secret-value")
    assert "super-secret-value" not in repr(store)
    assert "signed=True" in repr(store)


def test_unchanged_object_is_not_written_again_until_it_is_old(tmp_path):
    store = open_store(f"file://{tmp_path}", "", refresh_after_ms=10**9)
    ref = store.put(b"payload")
    path = tmp_path / store.location.key_for(ref.sha256)
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    store.put(b"payload")
    assert path.stat().st_mtime == pytest.approx(an_hour_ago)
    old = open_store(f"file://{tmp_path}", "", refresh_after_ms=60_000)
    old.put(b"payload")
    assert path.stat().st_mtime > an_hour_ago + 3000
