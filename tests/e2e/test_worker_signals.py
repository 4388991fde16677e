"""`sheaf worker` as a real process: SIGTERM finishes what fits and releases the rest."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sheaf.adapters.sql.migrate import upgrade
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import Document, Status
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from tests.e2e.conftest import Proc, sheaf_env, start

pytestmark = pytest.mark.e2e

# About six MB of text: several seconds of work, so SIGTERM lands mid-document.
BIG = " ".join(f"w{i % 5000}" for i in range(1_000_000)).encode()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    upgrade(url)
    return sheaf_env(SHEAF_DATABASE_URL=url, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))


@pytest.fixture
async def deps(env: dict[str, str]) -> AsyncIterator[Deps]:
    async with open_deps(Settings.from_env(env)) as opened:
        yield opened


async def _upload(deps: Deps) -> str:
    async def body() -> AsyncIterator[bytes]:
        yield BIG

    return (await accept_upload(deps, "c", "big.txt", body())).document.id


async def _wait(deps: Deps, document_id: str, status: Status, timeout: float = 60) -> Document:
    deadline = time.monotonic() + timeout
    while True:
        doc = await deps.store.get_document(document_id)
        assert doc is not None
        if doc.status is status:
            return doc
        assert time.monotonic() < deadline, f"stuck: {doc}"
        await asyncio.sleep(0.05)


async def test_sigterm_past_the_grace_period_releases_without_spending_an_attempt(
    deps: Deps, env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    document_id = await _upload(deps)
    env = {**env, "SHEAF_SHUTDOWN_GRACE_SECONDS": "0"}
    worker = start(procs, ["-m", "sheaf", "worker"], env, tmp_path, "worker")
    await _wait(deps, document_id, Status.PROCESSING)
    worker.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.popen.wait, 30) == 0, worker.output()
    doc = await _wait(deps, document_id, Status.QUEUED, timeout=1)
    assert doc.attempts == 0
    assert [a.outcome.value for a in doc.history] == ["interrupted"]


async def test_sigterm_within_the_grace_period_finishes_the_document(
    deps: Deps, env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    document_id = await _upload(deps)
    env = {**env, "SHEAF_SHUTDOWN_GRACE_SECONDS": "60"}
    worker = start(procs, ["-m", "sheaf", "worker"], env, tmp_path, "worker")
    await _wait(deps, document_id, Status.PROCESSING)
    worker.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.popen.wait, 60) == 0, worker.output()
    doc = await _wait(deps, document_id, Status.COMPLETED, timeout=1)
    assert doc.attempts == 1
