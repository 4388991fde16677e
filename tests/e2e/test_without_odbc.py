"""`sheaf up` on SQLite never needs the ODBC libraries (issue 16, point 0).

Every Sheaf process here (the supervisor, the API, the workers it starts) runs with
`pyodbc` and `aioodbc` unimportable, as on a machine without libodbc
(tests/no_odbc/sitecustomize.py on PYTHONPATH, inherited by every child): a document
uploaded through the API must still complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, free_port, sheaf_env, start, upload, wait_ready, wait_status

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = ROOT / "tests" / "no_odbc"


async def test_sheaf_up_on_sqlite_runs_without_the_odbc_stack(
    tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    env = sheaf_env(SHEAF_WORKERS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER), env["PYTHONPATH"]])
    probe = subprocess.run(
        [sys.executable, "-c", "import pyodbc"], env=env, capture_output=True, text=True
    )
    assert "ImportError: libodbc.so.2" in probe.stderr  # the blocker is in force
    port = free_port()
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc)
    status, body = await upload(http, url, "no-odbc", "notes.txt", b"Plain text, no driver.")
    assert status == 202, body
    doc = await wait_status(http, url, body["id"], {"completed", "failed"})
    assert doc["status"] == "completed", doc
    assert "pyodbc" not in proc.output()
