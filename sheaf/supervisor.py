"""`sheaf up`: the API in this process plus worker child processes, supervised.

Workers are separate processes (`python -m sheaf worker`) so a crash in one — or the
SIGKILL of a test — never takes the API or the other workers down; a worker that dies is
restarted with backoff. On SIGINT/SIGTERM the API stops accepting, workers get SIGTERM and
`shutdown_grace_seconds` (+5 s) to release their documents, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Mapping

from api.server import serve
from sheaf.aio import wait_event
from sheaf.config import Settings

log = logging.getLogger(__name__)

RESTART_MAX_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0


async def run_up(settings: Settings, environ: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    env = {**environ, "SHEAF_PORT": str(settings.port), "SHEAF_HOST": settings.host}
    async with asyncio.TaskGroup() as group:
        api = group.create_task(serve(settings, stop), name="api")
        for n in range(settings.workers):
            group.create_task(_keep_worker(n, env, settings, stop), name=f"worker-{n}")
        api.add_done_callback(lambda _: stop.set())


async def _keep_worker(
    n: int, env: dict[str, str], settings: Settings, stop: asyncio.Event
) -> None:
    """Run worker `n` until stop, restarting it (with backoff) whenever it dies."""
    delay = 1.0
    while not stop.is_set():
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sheaf", "worker", env=env
        )
        log.info("worker process started", extra={"worker": n, "pid": proc.pid})
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if stop.is_set():
            await _terminate(proc, waiter, settings.shutdown_grace_seconds + 5)
            return
        log.warning(
            "worker process exited; restarting",
            extra={"worker": n, "returncode": proc.returncode, "delay": delay},
        )
        if time.monotonic() - started > HEALTHY_RUN_SECONDS:
            delay = 1.0  # it had been running fine: a one-off crash restarts quickly
        await wait_event(stop, delay)
        delay = min(delay * 2, RESTART_MAX_SECONDS)


async def _terminate(
    proc: asyncio.subprocess.Process, waiter: asyncio.Task[int], grace: float
) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    done, _ = await asyncio.wait({waiter}, timeout=grace)
    if not done:
        log.warning("worker did not stop in time; killing it", extra={"pid": proc.pid})
        proc.kill()
        await waiter
