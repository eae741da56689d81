import hashlib

from app.oversize.reference import Reference, StoreLocation
from app.oversize.retention import collectable, referenced_hashes
from app.oversize.store import StoredObject

DAY = 24 * 3600 * 1000
NOW = 100 * DAY


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_references_are_found_wherever_their_bytes_travel():
    location = StoreLocation.parse("s3://b", "cc/")
    ref = Reference(location.url_for(sha("a")), sha("a"), 1).signed(b"k").to_bytes()
    assert referenced_hashes(ref) == {sha("a")}
    # Inside an Avro failure event (bytes embedded verbatim) or a moved record.
    assert referenced_hashes(b"\x00\x01prefix" + ref + b"suffix") == {sha("a")}
    assert referenced_hashes(b"plain payload") == set()
    assert referenced_hashes(None) == set()


def test_old_unreferenced_objects_go_referenced_and_young_ones_stay():
    location = StoreLocation.parse("s3://b", "cc/")
    old_free = StoredObject(location.key_for(sha("free")), 10, NOW - 8 * DAY)
    old_used = StoredObject(location.key_for(sha("used")), 10, NOW - 30 * DAY)
    young = StoredObject(location.key_for(sha("young")), 10, NOW - DAY)
    plan = collectable([old_free, old_used, young], {sha("used")}, NOW, 7 * DAY)
    assert plan.delete == [old_free]
    assert plan.kept_referenced == 1 and plan.kept_young == 1
