"""Profiles of running Sheaf processes, by py-spy, summarised where the CPU goes.

py-spy samples every thread of a process and, with `--subprocesses`, of its children
(`sheaf up`'s workers), without touching their code; idle threads are not sampled, so a
summary shows where CPU time goes. `SpyRecording` attaches to a process for as long as a
block runs, then writes the raw collapsed stacks and a short text summary beside them.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

from bench.harness import ROOT

SAMPLE_RATE = 100  # per second and thread
_PROCESS = re.compile(r'^process \d+:"(?P<command>[^"]*)"$')
_FRAME = re.compile(r"^(?P<function>.+) \((?P<file>[^():]+)(:\d+)?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class SpyRecording:
    """`py-spy record` on `pid` (and its children) while the `with` block runs."""

    def __init__(self, pid: int, out: Path) -> None:
        self._out = out
        self._raw = out.with_suffix(".collapsed")
        command = py_spy()
        if command is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self._proc = subprocess.Popen(
            [
                command,
                "record",
                *("--pid", str(pid)),
                "--subprocesses",
                "--threads",
                "--full-filenames",
                "--nonblocking",
                *("--rate", str(SAMPLE_RATE)),
                *("--format", "raw"),
                *("--output", str(self._raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> SpyRecording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._raw.exists():
            self._out.write_text(summarise(self._raw.read_text(errors="replace")))


def summarise(collapsed: str, top: int = 30) -> str:
    """Where the sampled CPU time went: per process role, then the hottest functions."""
    roles: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        roles[_role(frames)] += count
        functions = [f for f in (_function(frame) for frame in frames) if f]
        for function in set(functions):
            inclusive[function] += count
        if functions:
            own[functions[-1]] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} on-CPU samples at {SAMPLE_RATE}/s per thread", "", "by process:"]
    lines += [f"  {100 * n / total:5.1f}%  {role}" for role, n in roles.most_common()]
    lines += ["", f"top {top} functions, inclusive (the function and what it calls):"]
    project = [(f, n) for f, n in inclusive.most_common() if _is_project(f)]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in project[:top]]
    lines += ["", f"top {top} functions, self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def _role(frames: list[str]) -> str:
    commands = [m["command"] for f in frames if (m := _PROCESS.match(f))]
    command = commands[-1] if commands else "?"
    for role in ("worker", "api", "up"):
        if f"sheaf {role}" in command:
            return {"up": "sheaf up (API and supervisor)"}.get(role, f"sheaf {role}")
    return "the benchmark's own process"


def _function(frame: str) -> str | None:
    match = _FRAME.match(frame)
    if match is None or frame.startswith(("process ", "thread ")):
        return None
    return f"{match['function']} ({_short(match['file'])})"


def _short(path: str) -> str:
    """A path without this machine's prefixes: relative to the repo or to site-packages."""
    for marker in ("site-packages/", "/lib/python3.11/", f"{ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


def _is_project(function: str) -> bool:
    return any(f"({package}/" in function for package in ("sheaf", "api", "worker"))
