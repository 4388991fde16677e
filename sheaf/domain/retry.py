"""Retry delays: exponential backoff with full jitter, capped.

Full jitter (a uniform draw below the exponential ceiling) spreads retries of documents
that failed together, so a recovered dependency is not hit by all of them at once.
"""

from __future__ import annotations

import random


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`, given `attempt` (1-based) just failed."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)
