"""A worker SIGKILLed mid-document on PostgreSQL: another worker finishes it, exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sheaf.adapters.sql.migrate import upgrade
from sheaf.adapters.sql.schema import chunks
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import Document, Status
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from tests.e2e.conftest import ROOT, Proc, sheaf_env, start
from tests.samples import make_pdf

pytestmark = pytest.mark.e2e

WORDS = ["ledger", "audit", "control", "revenue", "inventory", "payroll", "treasury", "compliance"]
PAGES = [" ".join(f"{WORDS[(p + i) % len(WORDS)]}{i % 17}" for i in range(90)) for p in range(5)]


@pytest.fixture
def env(fresh_postgres_url: str, tmp_path: Path) -> dict[str, str]:
    upgrade(fresh_postgres_url)
    return sheaf_env(
        SHEAF_DATABASE_URL=fresh_postgres_url,
        SHEAF_BLOB_DIR=str(tmp_path / "blobs"),
        SHEAF_LEASE_SECONDS="3",
        SHEAF_HEARTBEAT_SECONDS="1",
        SHEAF_CHUNK_SIZE="300",
        SHEAF_CHUNK_OVERLAP="40",
        SHEAF_EMBED_BATCH_SIZE="2",
    )


@pytest.fixture
async def deps(env: dict[str, str]) -> AsyncIterator[Deps]:
    async with open_deps(Settings.from_env(env)) as opened:
        yield opened


async def _upload(deps: Deps, collection: str) -> str:
    async def body() -> AsyncIterator[bytes]:
        yield make_pdf(PAGES)

    return (await accept_upload(deps, collection, "big.pdf", body())).document.id


async def _wait(deps: Deps, document_id: str, status: Status, timeout: float = 60) -> Document:
    deadline = time.monotonic() + timeout
    while True:
        doc = await deps.store.get_document(document_id)
        assert doc is not None
        if doc.status is status:
            return doc
        assert time.monotonic() < deadline, f"stuck: {doc}"
        await asyncio.sleep(0.1)


async def _chunk_rows(deps: Deps, document_id: str) -> int:
    engine = deps.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(chunks.c.document_id == document_id)
        return int((await conn.execute(query)).scalar_one())


async def test_sigkilled_worker_is_recovered_with_the_clean_chunk_set(
    deps: Deps, env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    killed_id = await _upload(deps, "kill")
    victim = start(procs, [str(ROOT / "tests/e2e/killable_worker.py")], env, tmp_path, "victim")
    assert await asyncio.to_thread(victim.popen.wait, 60) == -9, victim.output()

    doc = await _wait(deps, killed_id, Status.PROCESSING, timeout=1)
    assert doc.attempts == 1
    assert await _chunk_rows(deps, killed_id) >= 2  # a batch was committed before the kill
    assert await deps.store.document_chunks(killed_id) == []  # ...but none is visible

    start(procs, ["-m", "sheaf", "worker"], env, tmp_path, "rescuer")
    doc = await _wait(deps, killed_id, Status.COMPLETED)
    assert doc.attempts == 2
    assert [a.outcome.value for a in doc.history] == ["expired", "completed"]
    assert doc.history[0].stage in {"embed", "index"}  # where the victim died

    clean_id = await _upload(deps, "clean")
    clean = await _wait(deps, clean_id, Status.COMPLETED)
    assert clean.attempts == 1
    recovered_chunks = await deps.store.document_chunks(killed_id)
    assert recovered_chunks == await deps.store.document_chunks(clean_id)
    assert doc.chunk_count == clean.chunk_count == len(recovered_chunks) > 4
    assert await _chunk_rows(deps, killed_id) == doc.chunk_count  # no leftovers of attempt 1
