"""Which stored claim-check objects may be deleted: pure.

An object goes when it is older than the retention period and no record still in a scanned
topic refers to it (a record still in a topic is within that topic's retention). References
are found by their content address (SHA-256) wherever they appear in a record's value: a
reference record, the same record moved to the dead-letter or poison topic, or a failure
event that carries it as its failed record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.oversize.store import StoredObject

MARKER = b'"claim_check":'
SHA = re.compile(rb'"sha256":"([0-9a-f]{64})"')


def referenced_hashes(value: bytes | bytearray | None) -> set[str]:
    if not value or MARKER not in value:
        return set()
    return {m.decode() for m in SHA.findall(value)}


def content_hash(key: str) -> str:
    return key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Collection:
    delete: list[StoredObject]
    kept_referenced: int
    kept_young: int


def collectable(objects: Iterable[StoredObject], referenced: set[str], now_ms: int,
                retention_ms: int) -> Collection:
    delete, referenced_kept, young = [], 0, 0
    for item in objects:
        if now_ms - item.last_modified_ms < retention_ms:
            young += 1
        elif content_hash(item.key) in referenced:
            referenced_kept += 1
        else:
            delete.append(item)
    return Collection(delete, referenced_kept, young)
