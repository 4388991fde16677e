"""The reduced chaos run (CI): 100 documents, 3 workers, a SIGKILL about every second.

`tests/chaos/run.py` does the damage; `tests/chaos/check.py` judges from the database
alone. The wake-ups travel over Service Bus (the test emulator, in a process of its own),
which is stopped for a few seconds once mid-run, besides the worker kills and the cut of
every database connection. Nothing may be lost or processed twice, no healthy document's
message may end in the dead-letter queue, the API and the workers must answer `/healthz`
throughout, and at least a fifth of the documents must show `attempts >= 2`, proof that
the kills landed mid-document. Further tests feed the checker a database with every kind
of damage and the health probes a process that stops answering, so a checker or a probe
that always says 0 cannot pass for a good run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from aiohttp import web

from sheaf.adapters.sql.migrate import upgrade
from tests.chaos import check, health, run
from tests.e2e.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.timeout(480)
def test_nothing_is_lost_or_duplicated_under_chaos(fresh_postgres_url: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tests.chaos.run",
        "--database-url", fresh_postgres_url,
        "--documents", "100", "--workers", "3", "--concurrency", "2",
        "--kill-every", "1.2", "--scale", "0.7", "--upload-rate", "2.0",
        "--cut-after", "8", "--bus", "servicebus", "--bus-restart-after", "20",
        "--timeout", "300",
        "--json", str(tmp_path / "harness.json"), "--workdir", str(tmp_path / "run"),
    ]  # fmt: skip
    harness_run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    logs = "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((tmp_path / "run").glob("*.log")))
    print(harness_run.stdout, harness_run.stderr[-3000:], logs, sep="\n")
    harness = json.loads((tmp_path / "harness.json").read_text())

    check = [sys.executable, "-m", "tests.chaos.check", "--dsn", fresh_postgres_url, "--json"]
    check += ["--dead-letters", str(tmp_path / "run" / "dead-letters.json")]
    verdict = json.loads(subprocess.run(check, cwd=ROOT, capture_output=True, check=True).stdout)

    assert harness["harness_errors"] == []
    assert verdict["uploaded"] == 100
    assert verdict["lost"] == 0
    assert verdict["duplicate_chunks"] == verdict["duplicate_completions"] == 0
    assert verdict["incomplete_chunk_sets"] == 0
    assert verdict["unexpected_outcomes"] == 0, verdict["examples"]
    assert verdict["retried_share"] >= 0.2
    assert verdict["dead_letters"]["healthy"] == verdict["dead_letters"]["unknown"] == 0
    assert harness["kills"] >= 20
    assert harness["connections_terminated"] >= 1
    assert harness["bus_restarts"] == 1
    # Messages flowed before the outage and again after it. (Whether a worker falls back
    # to polling meanwhile depends on timing: one whose slots stay busy throughout never
    # asks Service Bus for more, so `polling_fallbacks` is reported, not asserted.)
    assert 0 < harness["messages_completed_before_restart"] < harness["messages_completed"]
    dead = verdict["dead_letters"]["total"]
    assert harness["queue_left"] == {"active": 0, "scheduled": 0, "locked": 0, "dead_letter": dead}
    assert harness["healthz_failed"] == 0, harness["healthz"]
    assert harness["healthz"]["api"]["ok"] > 0
    assert harness["healthz"]["workers"]["ok"] > 0
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
        healthy = insert_document(cur, "ok--8.txt", "failed", [], code="lease_expired", attempts=10)
        encrypted = insert_document(cur, "expect-encrypted--9.pdf", "failed", [], code="encrypted")
    letters = [
        {"message_id": f"{encrypted}:1", "document_id": encrypted, "reason": "encrypted"},
        {"message_id": f"{healthy}:3", "document_id": healthy, "reason": "lease_expired"},
        {"message_id": "x:1", "document_id": str(uuid.uuid4()), "reason": "unknown_document"},
        {"message_id": "y", "document_id": None, "reason": "malformed_message"},
    ]
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        verdict = check.judge(cur, letters)
    assert (verdict.uploaded, verdict.completed, verdict.lost) == (9, 5, 1)
    assert verdict.duplicate_chunks == 1  # ok--3
    assert verdict.duplicate_completions == 1  # ok--4
    assert verdict.incomplete_chunk_sets == 2  # ok--3 (ordinals 0,1,1), ok--5 (0,2)
    assert verdict.unexpected_outcomes == 2  # expect-...--7 completed, ok--8 failed
    assert verdict.failed == {"encrypted": {"expected": 2}, "lease_expired": {"unexpected": 1}}
    assert (verdict.retried, verdict.with_expired_attempt, verdict.max_attempts) == (2, 1, 10)
    assert verdict.dead_letters == check.DeadLetters(
        total=4,
        healthy=1,  # ok--8's message
        expected_failures=1,  # expect-encrypted--9's, where it belongs
        unknown=2,  # a document that does not exist, an unreadable body
        reasons={"encrypted": 1, "lease_expired": 1, "unknown_document": 1, "malformed_message": 1},
    )
    assert not verdict.passed(min_retried=0.0)
    json.dumps(dataclasses.asdict(verdict))  # what `check.py --json` prints


async def test_the_health_probes_count_a_silent_process_and_excuse_a_starting_one() -> None:
    """A probe that always said 0 failures would pass the chaos test; this one is seen
    counting: a process that answered once and then stops is a failure, one that was just
    (re)started and has not answered yet is excused, and a 503 is a failure too."""
    status = {"code": 200}

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({}, status=status["code"])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    life, tally, stop = (
        health.Life("w", f"http://127.0.0.1:{port}"),
        health.Tally(),
        asyncio.Event(),
    )
    watching = asyncio.create_task(health.watch(life, tally, stop, time.monotonic))
    try:
        await until(lambda: tally.ok >= 2)
        status["code"] = 503
        await until(lambda: tally.failed >= 1)
        assert "HTTP 503" in tally.examples[0]
        await runner.cleanup()  # nothing listens any more
        await until(lambda: any("Connect" in e for e in tally.examples))
        life.restarted()  # as the harness does before a kill: silence is excused now
        failed = tally.failed
        await until(lambda: tally.excused >= 2)
        assert tally.failed == failed
    finally:
        stop.set()
        await watching
        await runner.cleanup()


async def until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_crashed_side_task_fails_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    """Once the database cut killed the harness's own query and with it the kills, which
    went unnoticed until the end: a run whose chaos stopped half-way must not pass."""

    async def kill_workers() -> None:
        raise RuntimeError("server closed the connection unexpectedly")

    report = run.Report()
    await run.guarded(kill_workers(), report)
    assert report.harness_errors == [
        "kill_workers: RuntimeError('server closed the connection unexpectedly')"
    ]
    assert "HARNESS ERROR in kill_workers" in capsys.readouterr().out
