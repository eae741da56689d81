"""Back-off delays and the delay tier a waiting retry is parked in."""

from __future__ import annotations

import random
from collections.abc import Sequence

from app.policy.rules import RetryPolicy


def delay_ms(policy: RetryPolicy, retry_number: int, rng: random.Random | None = None) -> int:
    """Delay before retry `retry_number` (1-based): 1 s, 2 s, 4 s with the default policy."""
    if retry_number < 1:
        raise ValueError("retry numbers start at 1")
    if policy.backoff == "fixed":
        base = float(policy.initial_ms)
    else:
        base = min(policy.initial_ms * policy.multiplier ** (retry_number - 1), policy.max_ms)
    if policy.jitter > 0:
        base += base * policy.jitter * (rng or random).random()
    return int(base)


def tier_for(remaining_ms: int, tiers_ms: Sequence[int]) -> int:
    """The largest tier not above the remaining wait, so a record never waits past its due
    time; the smallest tier when the wait is shorter than every tier (it is then due on
    arrival and the tier forwards it at once)."""
    ordered = sorted(tiers_ms)
    chosen = ordered[0]
    for tier in ordered:
        if tier <= remaining_ms:
            chosen = tier
    return chosen
