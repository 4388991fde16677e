"""Helpers to run Sheaf as real processes and talk to them over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]

# Fast timers so tests finish in seconds; every value is still validated by Settings.
FAST = {
    "SHEAF_POLL_INTERVAL_SECONDS": "0.2",
    "SHEAF_SWEEP_INTERVAL_SECONDS": "0.5",
    "SHEAF_RECONCILE_INTERVAL_SECONDS": "1",
    "SHEAF_CLEANUP_INTERVAL_SECONDS": "0.5",
    "SHEAF_RETRY_BASE_SECONDS": "0.2",
    "SHEAF_RETRY_MAX_SECONDS": "1",
    "SHEAF_SHUTDOWN_GRACE_SECONDS": "2",
    "SHEAF_LOG_FORMAT": "json",
    # The hashed fake: deterministic and instant. Tests of the real model (the default)
    # set SHEAF_EMBEDDER=local themselves (test_local_model.py).
    "SHEAF_EMBEDDER": "lexical",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sheaf_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEAF_")}
    env.update(FAST)
    env.update(settings)
    env["PYTHONPATH"] = str(ROOT)
    return env


class Proc:
    """A child process whose output goes to a log file shown when a test fails."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._out, stderr=self._out)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[list[Proc]]:
    """Processes started by a test; stopped at the end, their logs printed on failure."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()
    for proc in started:
        sys.stderr.write(f"\n--- {proc.log.name} ---\n{proc.output()}\n")


def start(procs: list[Proc], args: list[str], env: dict[str, str], cwd: Path, name: str) -> Proc:
    proc = Proc([sys.executable, *args], env, cwd, cwd / f"{name}.log")
    procs.append(proc)
    return proc


async def wait_ready(url: str, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise AssertionError(f"process exited early:\n{proc.output()}")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout}s:\n{proc.output()}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upload(
    http: aiohttp.ClientSession, url: str, collection: str, name: str, data: bytes
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    async with http.post(f"{url}/v1/collections/{collection}/documents", data=form) as response:
        return response.status, await response.json()


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def wait_status(
    http: aiohttp.ClientSession, url: str, document_id: str, want: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = await get_json(http, f"{url}/v1/documents/{document_id}")
        if doc["status"] in want:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"document stuck in {doc['status']}: {doc}")
        await asyncio.sleep(0.2)
