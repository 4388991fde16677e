"""Sheaf as its users run it: real processes, configured by `SHEAF_*` variables only.

`SheafProcess` starts `python -m sheaf <command>` with a clean environment (no `SHEAF_*`
variable of the caller leaks in), logs to a file, and stops with SIGTERM like Kubernetes
would. `rss_bytes` and `RssSampler` read a process's resident memory from /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp

from bench.harness import ROOT
from sheaf.adapters.sql import open_store
from sheaf.domain.models import Document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sheaf_env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEAF_")}
    env.update(settings)
    env["PYTHONPATH"] = str(ROOT)
    return env


class SheafProcess:
    """`python -m sheaf <args>` in `cwd`, its output in `log`."""

    def __init__(
        self,
        args: list[str],
        settings: dict[str, str],
        cwd: Path,
        log: Path,
    ) -> None:
        self.log = log
        self._out = log.open("ab")
        command = [sys.executable, "-m", "sheaf", *args]
        self.popen = subprocess.Popen(
            command, env=sheaf_env(settings), cwd=cwd, stdout=self._out, stderr=self._out
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        """Until it exits by itself (a command such as `db upgrade`)."""
        code = self.popen.wait(timeout)
        self._out.close()
        return code

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def count_in_log(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)


async def wait_ready(url: str, proc: SheafProcess, within: float = 60) -> None:
    """Until `/readyz` answers 200; raises with the process's log if it never does."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"Sheaf exited early:\n{proc.tail()}")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {within:g} s:\n{proc.tail()}")


async def wait_log(proc: SheafProcess, text: str, count: int, within: float = 60) -> None:
    """Until `text` appears `count` times in the log (e.g. every worker said it started)."""
    deadline = time.monotonic() + within
    while proc.count_in_log(text) < count:
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"never saw {count} x {text!r}:\n{proc.tail()}")
        await asyncio.sleep(0.1)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` now (VmRSS), in bytes."""
    return _status_bytes(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The highest resident set size of `pid` since it started or since `reset_peak_rss`."""
    return _status_bytes(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Restart the kernel's high-water mark of `pid` at its current RSS (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread; `peak` is the highest."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self.peak = rss_bytes(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self._pid))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak = max(self.peak, rss_bytes(self._pid))
            except (OSError, RuntimeError):
                return


# -- talking to a running Sheaf ------------------------------------------------------------


async def upload_all(api: str, files: list[Path], concurrency: int = 4) -> dict[str, float]:
    """Upload every file, `concurrency` at a time; document id → upload start (wall clock)."""
    sent: dict[str, float] = {}
    queue = list(reversed(files))
    timeout = aiohttp.ClientTimeout(total=300)

    async def uploader(session: aiohttp.ClientSession) -> None:
        while queue:
            file = queue.pop()
            form = aiohttp.FormData()
            form.add_field("file", file.read_bytes(), filename=file.name)
            started = time.time()
            async with session.post(f"{api}/v1/collections/bench/documents", data=form) as r:
                body = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"upload of {file.name}: {r.status} {body}")
            sent[body["id"]] = started

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(uploader(session) for _ in range(concurrency)))
    return sent


async def wait_done(api: str, expected: int, within: float) -> None:
    """Until `expected` documents are completed or failed, polling `/v1/stats`."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{api}/v1/stats") as response:
                counts = (await response.json())["counts"]
            if counts["completed"] + counts["failed"] >= expected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"documents not done after {within:g} s: {counts}")
            await asyncio.sleep(0.2)


async def read_back(url: str, ids: list[str]) -> list[Document]:
    """The documents with their attempt history, straight from the store."""
    store = await open_store(url)
    try:
        found = [await store.get_document(document_id, history=True) for document_id in ids]
    finally:
        await store.close()
    return [doc for doc in found if doc is not None]


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (e.g. the workers `sheaf up` started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds a set of processes used between `start` and `stop`.

    Processes may appear after `start` (their whole CPU counts) but should not exit before
    `stop` (their CPU would be lost); both hold for long-lived workers and pooled
    database connections.
    """

    def __init__(self) -> None:
        self._before: dict[int, float] = {}
        self.used: dict[str, float] = {}

    def start(self, pids: dict[int, str]) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in pids}

    def stop(self, pids: dict[int, str]) -> None:
        for pid, role in pids.items():
            spent = cpu_seconds(pid) - self._before.get(pid, 0.0)
            self.used[role] = self.used.get(role, 0.0) + spent
