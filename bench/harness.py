"""What every benchmark shares: its run context, Markdown tables, load averages, statistics.

A benchmark module exposes `NAME`, `TITLE` and `async def run(ctx: Context) -> None`; it
prints through `ctx.table` and `ctx.note`, so `python -m bench` output can be pasted into
`docs/benchmarks.md` as it is.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
Setting = Literal["quick", "full"]


@dataclass
class Context:
    """How this run was asked for, and where a benchmark may put its files."""

    setting: Setting
    workdir: Path  # a fresh temporary directory, removed after the run
    postgres_admin_dsn: str  # libpq DSN of a database from which fresh ones are created
    profile_dir: Path | None = None  # where profiles go (pyinstrument, py-spy), when asked for

    @property
    def quick(self) -> bool:
        return self.setting == "quick"

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        print(render_table(title, columns, rows), flush=True)

    def note(self, text: str) -> None:
        print(f"{text}\n", flush=True)

    def progress(self, text: str) -> None:
        """A line for whoever watches the run; on stderr so stdout stays the report."""
        print(f"  … {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def profiled(self, name: str) -> Iterator[None]:
        """Profile the block with pyinstrument into `profile_dir/name.txt`, if asked."""
        if self.profile_dir is None:
            yield
            return
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            path = self.profile_dir / f"{name}.txt"
            path.write_text(profile_text(profiler))
            self.progress(f"profile written to {path}")

    def spied(self, pid: int, name: str) -> contextlib.AbstractContextManager[object]:
        """Sample process `pid` and its children with py-spy into `profile_dir/name.txt`."""
        if self.profile_dir is None:
            return contextlib.nullcontext()
        from bench.profiles import SpyRecording

        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.progress(f"py-spy profile to {self.profile_dir / name}.txt")
        return SpyRecording(pid, self.profile_dir / f"{name}.txt")


def profile_text(profiler: Any) -> str:
    """pyinstrument's call tree, then the 25 functions with the most time of their own."""
    tree = profiler.output_text(unicode=True, color=False)
    flat = profiler.output_text(unicode=True, color=False, flat=True, show_all=True)
    top = "\n".join(flat.splitlines()[:35])
    return f"{tree}\n\nself time (flat):\n{top}\n"


def render_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    numeric = [
        bool(cells) and all(_is_number(row[i]) for row in cells) for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else "-" * (w + 2)
            for w, r in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    body = "\n".join(line(row) for row in cells)
    return f"**{title}**\n\n{line(list(columns))}\n{rule}\n{body}\n"


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?|—", text))


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def load_line(when: str) -> str:
    """`uptime`'s load averages, as the harness saw them `when`."""
    one, five, fifteen = os.getloadavg()
    stamp = time.strftime("%H:%M:%S")
    return f"load average at {when} ({stamp}): {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


FSYNC_SAMPLES = 40
FSYNC_SLOW_MS = 1.0
"""A median commit above this is the machine's slow fsync state (issue 19 saw ~0.15 ms
and ~4 ms alternate minute by minute); ratios are only taken within one state."""


def fsync_latency(directory: Path) -> tuple[float, float]:
    """Median and 90th percentile milliseconds of what a database commit waits for: a
    4 KiB write plus `fdatasync`, in `directory` (the benchmark's own, on the disk its
    SQLite files use; PostgreSQL's data directory shares it here)."""
    path = directory / ".fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for n in range(FSYNC_SAMPLES):
            os.pwrite(fd, n.to_bytes(1, "big") * 4096, 0)
            started = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return median(samples), percentile(samples, 90)


def fsync_line(when: str, directory: Path) -> str:
    """The commit latency `when`, and which of the machine's two states that is."""
    middle, p90 = fsync_latency(directory)
    state = "slow" if middle > FSYNC_SLOW_MS else "fast"
    return f"fsync at {when}: median {middle:.2f} ms, p90 {p90:.2f} ms ({state} state)"


def machine_description(postgres_version: str | None) -> list[tuple[str, str]]:
    """What `docs/benchmarks.md` records about the machine the numbers come from."""
    return [
        ("CPUs (nproc)", _run(["nproc"]) or str(os.cpu_count())),
        ("CPU model", _cpu_model()),
        ("memory (free -h, total)", _memory_total()),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("PostgreSQL", postgres_version or "unavailable"),
        ("Sheaf commit", _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?"),
    ]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    output = _run(["free", "-h"])
    for line in (output or "").splitlines():
        if line.startswith("Mem:"):
            return line.split()[1]
    return "unknown"


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


class Stopwatch:
    """Elapsed wall-clock seconds since it was made."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
