"""A worker's memory is bounded by its settings, not by the document it processes.

Measured on a real pipeline (SQLite, local blobs, isolated extraction children) in a
fresh process (`tests.memory_probe`), on one line of ~12 MB of text: the case where the
list-based pipeline grew most (issue 19 measured 2.4 GiB on a 50 MB one-line file, so
~580 MiB for this one). Not timed: only memory is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.memory_probe import write_prose

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def probe(path: Path, workdir: Path) -> dict[str, Any]:
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", str(path), str(workdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_peak_memory_does_not_grow_with_the_document(tmp_path: Path) -> None:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        require_service("/proc/self/clear_refs", "peak RSS is measured through Linux's /proc")
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_prose(small, 1 * MiB, one_line=True)
    write_prose(large, 12 * MiB, one_line=True)
    baseline = probe(small, tmp_path / "small")
    measured = probe(large, tmp_path / "large")
    assert (baseline["outcome"], measured["outcome"]) == ("completed", "completed")
    assert measured["chunks"] > 10 * baseline["chunks"]  # the large one really was processed
    growth = measured["peak_growth_bytes"]
    assert growth < 120 * MiB, f"peak grew {growth / MiB:.0f} MiB on a 12 MB document"
    assert growth < baseline["peak_growth_bytes"] + 64 * MiB  # 12x the text, not 12x the memory
