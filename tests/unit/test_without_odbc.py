"""The README's test command on a machine without the ODBC libraries: no collection error.

`tests/no_odbc/sitecustomize.py` makes `pyodbc` and `aioodbc` fail to import exactly as a
missing libodbc does. Collecting the whole suite under it must succeed, with the driver
tests skipped and their reason shown; under CI=true, where the libraries are installed,
the same missing import must fail the run instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = ROOT / "tests" / "no_odbc"
DRIVER_TESTS = (
    "tests/unit/test_mssql_engine.py",
    "tests/unit/test_mssql_errors.py",
    "tests/unit/test_mssql_round_trips.py",
)


def without_odbc(*args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER), str(ROOT)])
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_blocker_fails_the_import_as_a_missing_libodbc_does() -> None:
    done = without_odbc("-c", "import pyodbc", ci=False)
    assert done.returncode == 1
    assert "ImportError: libodbc.so.2" in done.stderr


def test_the_suite_collects_without_odbc_and_says_why_driver_tests_skip() -> None:
    done = without_odbc("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", ci=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stdout.splitlines()[-1], done.stdout
    (skipped,) = [line for line in done.stdout.splitlines() if "ODBC client stack" in line]
    assert skipped.startswith(f"SKIPPED [{len(DRIVER_TESTS)}] tests/conftest.py"), skipped


def test_under_ci_a_missing_odbc_stack_fails_the_run() -> None:
    done = without_odbc(
        "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *DRIVER_TESTS, ci=True
    )
    assert done.returncode != 0
    for module in DRIVER_TESTS:
        assert f"ERROR {module} - Failed: the ODBC client stack does not import" in done.stdout
    assert f"no tests collected, {len(DRIVER_TESTS)} errors" in done.stdout
