"""One byte form per JSON value, and its checksum: what a cache's read-back verification and
the conflict resolver agree on (Scenario 5)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def canonical(value: Any) -> bytes:
    """One byte form per JSON value (keys sorted), for comparing and checksums."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def checksum(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()
