"""The `sheaf` command line for people, against a real `sheaf up`: tables, `--json`, and
`upload --wait` with its exit code. Output goes to pipes, as in a script or CI log."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Proc, sheaf_env
from tests.e2e.console_support import sheaf_up
from tests.samples import encrypt_pdf, make_pdf

pytestmark = pytest.mark.e2e


async def sheaf(tmp_path: Path, url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sheaf",
        *args,
        env=sheaf_env(SHEAF_API_URL=url),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_upload_wait_status_and_failed_list_for_people_and_programs(
    tmp_path: Path, procs: list[Proc]
) -> None:
    url = await sheaf_up(tmp_path, procs)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"note{i}.txt").write_text(f"Field note {i}: the crane was inspected. " * 20)

    code, out, err = await sheaf(tmp_path, url, "upload", "--wait", "-c", "cli", str(inbox))
    assert code == 0, err
    assert out.splitlines() == ["3 file(s): 3 queued", "processed: 3 completed"]
    assert "" not in err.splitlines()  # no blank line per file off a terminal
    assert len(re.findall(r"note\d\.txt: \S+ queued", err)) == 3

    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypt_pdf(make_pdf(["Secret page."]), "pw"))
    (tmp_path / "more.txt").write_text("One more note about the harbour. " * 10)
    code, out, err = await sheaf(
        tmp_path, url, "upload", "--wait", "-c", "cli", str(locked), str(tmp_path / "more.txt")
    )
    assert code == 1, (out, err)  # one of them failed
    assert out.splitlines()[-1] == "processed: 1 completed, 1 failed"
    assert f"{locked}: failed (encrypted: " in err

    code, out, err = await sheaf(tmp_path, url, "status")
    assert code == 0, err
    assert re.search(r"^completed\s+4$", out, re.MULTILINE), out
    assert re.search(r"^failed\s+1$", out, re.MULTILINE), out
    assert "Oldest ready document waiting: none" in out
    code, out, _ = await sheaf(tmp_path, url, "status", "--json")
    assert json.loads(out)["counts"]["completed"] == 4

    code, out, err = await sheaf(tmp_path, url, "failed", "list")
    assert code == 0, err
    header, rule, row = out.splitlines()
    assert header.split() == ["DOCUMENT", "COLLECTION", "FILE", "ERROR", "MESSAGE"]
    assert set(rule) == {"-", " "}
    document_id, collection, filename, error = row.split()[:4]
    assert (collection, filename, error) == ("cli", "locked.pdf", "encrypted")
    code, out, _ = await sheaf(tmp_path, url, "failed", "list", "--json")
    assert [d["id"] for d in json.loads(out)["documents"]] == [document_id]

    code, out, err = await sheaf(tmp_path, url, "status", document_id)
    assert code == 0, err
    assert re.search(r"^Status\s+failed$", out, re.MULTILINE), out
    assert re.search(r"^Failed in stage\s+extract$", out, re.MULTILINE), out
    assert re.search(r"^#\s+OUTCOME\s+WORKER\s+STARTED\b", out, re.MULTILINE), out
    assert not re.search(r"\d\.\d{4,}", out), out  # durations are rounded, not 18 digits
    code, out, _ = await sheaf(tmp_path, url, "status", document_id, "--json")
    assert json.loads(out)["history"][0]["outcome"] == "permanent"
