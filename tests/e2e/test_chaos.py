"""The reduced chaos run (CI): 100 documents, 3 workers, a SIGKILL about every second.

`tests/chaos/run.py` does the damage; `tests/chaos/check.py` judges from the database
alone. Nothing may be lost or processed twice, and at least a fifth of the documents
must show `attempts >= 2`, proof that the kills landed mid-document. A second test feeds
the checker a database with every kind of damage, so a checker that always says 0
cannot pass for a good run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from sheaf.adapters.sql.migrate import upgrade
from tests.chaos import check
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.timeout(300)
def test_nothing_is_lost_or_duplicated_under_chaos(fresh_postgres_url: str, tmp_path: Path) -> None:
    run = [
        sys.executable, "-m", "tests.chaos.run",
        "--database-url", fresh_postgres_url,
        "--documents", "100", "--workers", "3", "--concurrency", "2",
        "--kill-every", "1.2", "--scale", "0.7", "--upload-rate", "2.0",
        "--cut-after", "8", "--timeout", "200",
        "--json", str(tmp_path / "harness.json"), "--workdir", str(tmp_path / "run"),
    ]  # fmt: skip
    harness_run = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, check=False)
    logs = "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((tmp_path / "run").glob("*.log")))
    print(harness_run.stdout, harness_run.stderr[-3000:], logs, sep="\n")
    harness = json.loads((tmp_path / "harness.json").read_text())

    check = [sys.executable, "-m", "tests.chaos.check", "--dsn", fresh_postgres_url, "--json"]
    verdict = json.loads(subprocess.run(check, cwd=ROOT, capture_output=True, check=True).stdout)

    assert verdict["uploaded"] == 100
    assert verdict["lost"] == 0
    assert verdict["duplicate_chunks"] == verdict["duplicate_completions"] == 0
    assert verdict["incomplete_chunk_sets"] == 0
    assert verdict["unexpected_outcomes"] == 0, verdict["examples"]
    assert verdict["retried_share"] >= 0.2
    assert harness["kills"] >= 20
    assert harness["connections_terminated"] >= 1
    assert harness["healthz_failed"] == 0
    assert harness_run.returncode == 0


def insert_document(cur: Any, filename: str, status: str, ordinals: list[int], **row: Any) -> str:
    """A document row with live chunks at `ordinals` and one attempt per outcome given."""
    doc_id, token = str(uuid.uuid4()), str(uuid.uuid4())
    cur.execute(
        "INSERT INTO documents (id, collection, filename, content_type, size_bytes, sha256, "
        "blob_key, status, attempts, max_attempts, error_code, chunk_count, chunks_token, "
        "created_at, updated_at) VALUES (%s, 'c', %s, 'text/plain', 1, %s, %s, %s, %s, 10, %s, "
        "%s, %s, now(), now())",
        (doc_id, filename, doc_id, doc_id, status, row.get("attempts", 1), row.get("code"),
         row.get("chunk_count", len(ordinals)), token),
    )  # fmt: skip
    for ordinal in ordinals:
        cur.execute(
            "INSERT INTO chunks (document_id, collection, lease_token, ordinal, page_start, "
            "page_end, text, model, dimensions, embedding) "
            "VALUES (%s, 'c', %s, %s, 1, 1, 't', 'm', 1, %s)",
            (doc_id, token, ordinal, b"\0\0\0\0"),
        )
    for number, outcome in enumerate(row.get("outcomes", []), start=1):
        cur.execute(
            "INSERT INTO attempts (document_id, number, lease_token, worker_id, started_at, "
            "outcome) VALUES (%s, %s, %s, 'w', now(), %s)",
            (doc_id, number, str(uuid.uuid4()), outcome),
        )
    return doc_id


def test_the_checker_finds_what_it_claims_to(fresh_postgres_url: str) -> None:
    """A checker that always said 0 would pass the chaos test; this one is seen failing."""
    upgrade(fresh_postgres_url)
    dsn = fresh_postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        insert_document(cur, "ok--1.txt", "completed", [0, 1, 2], outcomes=["completed"])
        insert_document(cur, "ok--2.txt", "queued", [], attempts=2, outcomes=["expired"])
        insert_document(cur, "ok--3.txt", "completed", [0, 1, 1], chunk_count=2)
        insert_document(cur, "ok--4.txt", "completed", [0], outcomes=["completed"] * 2)
        insert_document(cur, "ok--5.txt", "completed", [0, 2])
        insert_document(cur, "expect-encrypted--6.pdf", "failed", [], code="encrypted")
        insert_document(cur, "expect-encrypted--7.pdf", "completed", [0])
        insert_document(cur, "ok--8.txt", "failed", [], code="lease_expired", attempts=10)
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        verdict = check.judge(cur)
    assert (verdict.uploaded, verdict.completed, verdict.lost) == (8, 5, 1)
    assert verdict.duplicate_chunks == 1  # ok--3
    assert verdict.duplicate_completions == 1  # ok--4
    assert verdict.incomplete_chunk_sets == 2  # ok--3 (ordinals 0,1,1), ok--5 (0,2)
    assert verdict.unexpected_outcomes == 2  # expect-...--7 completed, ok--8 failed
    assert verdict.failed == {"encrypted": {"expected": 1}, "lease_expired": {"unexpected": 1}}
    assert (verdict.retried, verdict.with_expired_attempt, verdict.max_attempts) == (2, 1, 10)
    assert not verdict.passed(min_retried=0.0)
    json.dumps(dataclasses.asdict(verdict))  # what `check.py --json` prints
