"""`sheaf up` as a new user meets it: a busy port, and a supervisor killed outright.

Both run the real command as a subprocess. Its workers are found by their command line
(`--supervisor-pid=<pid>`), read from /proc, so these tests need Linux.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Proc, free_port, sheaf_env, start, wait_ready

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="finds worker processes through /proc"
    ),
]


def workers_of(supervisor_pid: int) -> list[int]:
    """Pids of live `sheaf worker` processes started by this supervisor, orphaned or not."""
    marker = f"--supervisor-pid={supervisor_pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited meanwhile
        if marker in cmdline.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


async def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_port_in_use_is_one_clear_line_and_starts_no_worker(
    tmp_path: Path, procs: list[Proc]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], sheaf_env(), tmp_path, "up")
        returncode = await asyncio.to_thread(proc.popen.wait, 60)
        output = proc.output()
    assert returncode == 1, output
    assert f"Error: cannot listen on 127.0.0.1:{port}" in output
    assert "SHEAF_PORT" in output  # says what to do
    assert "Traceback" not in output
    assert "Sheaf is up" not in output
    assert workers_of(proc.popen.pid) == []


async def test_workers_stop_when_the_supervisor_is_killed(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    env = sheaf_env(SHEAF_WORKERS="2")
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    await wait_ready(f"http://127.0.0.1:{port}", proc)
    assert await wait_for(lambda: len(workers_of(proc.popen.pid)) == 2, 30), proc.output()
    proc.popen.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can tell them
    proc.popen.wait()
    try:
        # SIGTERM from the kernel: they release what they hold (grace 2 s) and exit.
        assert await wait_for(lambda: workers_of(proc.popen.pid) == [], 15), (
            f"orphaned workers {workers_of(proc.popen.pid)} kept running"
        )
    finally:
        for pid in workers_of(proc.popen.pid):  # never leave them behind on a failure
            os.kill(pid, signal.SIGKILL)
