"""The rate limit: how long to wait so that ``sent`` records take at least ``sent / rate``
seconds, and how many records to take at a time so that a burst stays short."""

from __future__ import annotations

MAX_BATCH = 10_000
BURST_S = 0.1  # a limited replay sends at most this many seconds' worth at once


def wait_s(sent: int, elapsed_s: float, rate: float | None) -> float:
    if not rate:
        return 0.0
    return max(0.0, sent / rate - elapsed_s)


def batch_size(rate: float | None) -> int:
    if not rate:
        return MAX_BATCH
    return max(1, min(MAX_BATCH, int(rate * BURST_S)))
