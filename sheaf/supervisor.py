"""`sheaf up`: the API in this process plus worker child processes, supervised.

Workers are separate processes (`python -m sheaf worker`) so a crash in one — or the
SIGKILL of a test — never takes the API or the other workers down; a worker that dies is
restarted with backoff. On SIGINT/SIGTERM the API stops accepting, workers get SIGTERM and
`shutdown_grace_seconds` (+5 s) to release their documents, then SIGKILL.

No worker outlives the supervisor: workers start only once the API listens (a port in use
is one error line, with nothing to clean up), a worker task that is cancelled stops its
process, and each worker gets SIGTERM from the kernel if the supervisor dies without a
chance to clean up, SIGKILL included (`sheaf.lifeline`).

Each worker serves its own `/metrics` (and `/healthz`, `/readyz`): worker N on
`SHEAF_WORKER_METRICS_PORT` + N when that base port is set, else on the API's port + 1 + N
(or a port the system picks, when that one is taken), so the stage timings, which only
workers measure, are visible without a setting; the addresses are logged at start. A
restarted worker gets the same port back, so Prometheus sees one target per worker slot
whose counters reset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from sheaf import metrics
from sheaf.aio import wait_event
from sheaf.config import Settings
from sheaf.errors import ConfigError

log = logging.getLogger(__name__)

RESTART_MAX_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0


# `api.server.serve`, passed in by the CLI: the shared package does not import the API.
ServeApi = Callable[[Settings, asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]]


async def run_up(
    settings: Settings,
    environ: Mapping[str, str],
    serve: ServeApi,
    announce: Callable[[], None] = lambda: None,
) -> None:
    """Serve the API, then start the workers; `announce` runs once the API listens.

    `serve(settings, stop, listening)` sets `listening` once bound. Raises `ConfigError`
    (before any worker starts) when the API cannot listen.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    check_worker_ports(settings)
    listening = asyncio.Event()
    api = asyncio.create_task(serve(settings, stop, listening), name="api")
    listened = asyncio.create_task(listening.wait())
    await asyncio.wait({api, listened}, return_when=asyncio.FIRST_COMPLETED)
    listened.cancel()
    if api.done():
        api.result()  # raises why the API could not listen
        return
    announce()
    ports = worker_metrics_ports(settings)
    if ports:
        urls = [f"http://{settings.host}:{port}/metrics" for port in ports]
        log.info("worker metrics", extra={"urls": urls})
    async with asyncio.TaskGroup() as group:
        group.create_task(_until(api), name="api")
        for n in range(settings.workers):
            env = worker_env(environ, settings, n, ports[n])
            group.create_task(_keep_worker(n, env, settings, stop), name=f"worker-{n}")
        api.add_done_callback(lambda _: stop.set())


async def _until(task: asyncio.Task[None]) -> None:
    """The running API, joined to the group: if it fails, the workers are stopped too."""
    await task


def worker_env(
    environ: Mapping[str, str], settings: Settings, n: int, metrics_port: int | None = None
) -> dict[str, str]:
    """The environment of worker `n`: the API's settings, and its own metrics port
    (`metrics_port`, else SHEAF_WORKER_METRICS_PORT + n when that is set)."""
    env = {**environ, "SHEAF_PORT": str(settings.port), "SHEAF_HOST": settings.host}
    if metrics_port is None and settings.worker_metrics_port:
        metrics_port = settings.worker_metrics_port + n
    if metrics_port is not None:
        env["SHEAF_WORKER_METRICS_PORT"] = str(metrics_port)
    return env


def worker_metrics_ports(settings: Settings) -> list[int]:
    """Each worker's metrics port: SHEAF_WORKER_METRICS_PORT + N when set; otherwise the
    API's port + 1 + N where that is free, else one the system picks (kept across
    restarts of that worker)."""
    if settings.worker_metrics_port:
        return [settings.worker_metrics_port + n for n in range(settings.workers)]
    wanted = (settings.port + 1 + n for n in range(settings.workers))
    return [port if _free(settings.host, port) else _free_port(settings.host) for port in wanted]


def _free(host: str, port: int) -> bool:
    if port > 65535:
        return False
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def check_worker_ports(settings: Settings) -> None:
    """Refuse at start a metrics port range that runs past 65535 or covers the API's port."""
    base = settings.worker_metrics_port
    if not base or not settings.workers:
        return
    ports = range(base, base + settings.workers)
    if ports[-1] > 65535 or settings.port in ports:
        raise ConfigError(
            f"SHEAF_WORKER_METRICS_PORT={base} gives the {settings.workers} workers ports "
            f"{ports[0]}-{ports[-1]}, which must stay below 65536 and leave out the API's "
            f"port {settings.port}"
        )


async def _keep_worker(
    n: int, env: dict[str, str], settings: Settings, stop: asyncio.Event
) -> None:
    """Run worker `n` until stop, restarting it (with backoff) whenever it dies."""
    delay = 1.0
    while not stop.is_set():
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sheaf", "worker", f"--supervisor-pid={os.getpid()}", env=env
        )
        log.info("worker process started", extra={"worker": n, "pid": proc.pid})
        waiter = asyncio.create_task(proc.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # another task of `sheaf up` failed: take it along
            if proc.returncode is None:
                proc.terminate()  # it releases its documents; it cannot be waited for here
            raise
        finally:
            stopper.cancel()
        if stop.is_set():
            await _terminate(proc, waiter, settings.shutdown_grace_seconds + 5)
            return
        metrics.WORKER_RESTARTS.inc()
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
