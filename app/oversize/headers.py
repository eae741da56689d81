"""Header names of oversized-message records. Original headers stay as they were; these are
appended, and a consumer that reassembles the message removes them again."""

from __future__ import annotations

from collections.abc import Iterable

from app.contracts import headers as h

OVERSIZE = "recovery.oversize."
FRAGMENT = "recovery.fragment."

# Which strategy made the record fit: compression, fragmentation or external_storage.
STRATEGY = OVERSIZE + "strategy"
# zstd, lz4 or gzip: the carried bytes (record value, fragment set or stored object) are
# compressed with it. Absent: not compressed.
CODEC = OVERSIZE + "codec"
# The original event id: the same for every record carrying one message, so a reader can
# deliver it once however often it was published.
MESSAGE_ID = OVERSIZE + "original.event.id"
# SHA-256 (hex) and length of the carried bytes (after compression, if any).
SHA256 = OVERSIZE + "sha256"
SIZE = OVERSIZE + "size"
# Length of the payload as the producer gave it (before compression).
ORIGINAL_SIZE = OVERSIZE + "original.size"
# "1" when the original record had no key (fragments are then keyed by their set id so they
# share a partition).
KEY_NULL = OVERSIZE + "key.null"

FRAGMENT_ID = FRAGMENT + "id"
FRAGMENT_INDEX = FRAGMENT + "index"
FRAGMENT_TOTAL = FRAGMENT + "total"
# Where this fragment's bytes start within the whole.
FRAGMENT_OFFSET = FRAGMENT + "offset"

COMPRESSION = "compression"
FRAGMENTATION = "fragmentation"
EXTERNAL_STORAGE = "external_storage"
STRATEGIES = (COMPRESSION, FRAGMENTATION, EXTERNAL_STORAGE)


def is_own(key: str) -> bool:
    return key.startswith(OVERSIZE) or key.startswith(FRAGMENT)


def original_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> h.Headers:
    """The headers the producer gave, without the ones added here."""
    return [(k, v) for k, v in headers or () if not is_own(k)]


def strategy_of(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    return h.header_value(list(headers or ()), STRATEGY)
