"""Liveness probes during the chaos run: the API and every worker must answer `/healthz`.

Each target is probed every `INTERVAL` seconds, as a Kubernetes liveness probe would.
A probe fails when it gets no 200 within `TIMEOUT` seconds. Two cases are excused,
because the harness caused them: a worker it killed while the probe was under way, and
a (re)started worker that has not answered yet, for up to `STARTUP_GRACE` seconds (a
startup probe's job, not a liveness probe's). Everything else counts as a failure, and
the first few are kept with what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

INTERVAL = 0.5
TIMEOUT = 5.0
STARTUP_GRACE = 120.0


@dataclass
class Tally:
    """Probe outcomes of one kind of target (`api` or `workers`)."""

    ok: int = 0
    failed: int = 0
    excused: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Life:
    """One probed process slot: which process generation runs there and since when."""

    name: str
    url: str
    generation: int = 0
    started: float = field(default_factory=time.monotonic)
    answered: bool = False  # the current generation answered once

    def restarted(self) -> None:
        self.generation += 1
        self.started = time.monotonic()
        self.answered = False


async def probe(session: aiohttp.ClientSession, url: str) -> str | None:
    """None when `url`/healthz answers 200, else what went wrong."""
    try:
        async with session.get(f"{url}/healthz") as response:
            if response.status == 200:
                return None
            return f"HTTP {response.status}: {(await response.text())[:200]}"
    except TimeoutError:
        return f"no answer within {TIMEOUT:g} s"
    except aiohttp.ClientError as exc:
        return repr(exc)


async def watch(life: Life, tally: Tally, stop: asyncio.Event, clock: Callable[[], float]) -> None:
    """Probe one slot until `stop`; `clock()` is seconds since the run began (for examples)."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            generation = life.generation
            error = await probe(session, life.url)
            same = generation == life.generation
            if error is None:
                tally.ok += 1
                life.answered = life.answered or same
            elif not same or (
                not life.answered and time.monotonic() - life.started < STARTUP_GRACE
            ):
                tally.excused += 1
            elif not stop.is_set():
                tally.failed += 1
                if len(tally.examples) < 10:
                    tally.examples.append(f"{life.name} at {clock():.0f} s: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL)
