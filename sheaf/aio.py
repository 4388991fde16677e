"""Small asyncio helpers shared by the worker, the supervisor and housekeeping.

They use `asyncio.timeout` rather than `asyncio.wait_for`: on Python 3.11, cancelling a
task inside `wait_for` at the moment its inner future completes can swallow the
cancellation, which would make a worker ignore its shutdown.
"""

from __future__ import annotations

import asyncio
import random


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def wait_any(events: list[asyncio.Event], seconds: float | None) -> None:
    """Wait until one of `events` is set, or `seconds` pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Backoff:
    """Jittered exponential delays: `first` * 2**n * [0.5, 1.0), capped at `cap` seconds."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first
