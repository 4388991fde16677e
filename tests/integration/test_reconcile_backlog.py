"""The reconciler does not amplify a backlog, and still recovers a lost wake-up.

Hundreds of documents are uploaded through Service Bus (the emulator, with the real SDK)
into a real SQLite database, one wake-up is taken out of the queue on purpose, and the
backlog waits past `reconcile_after_seconds` before one slow worker (one slot, a slowed
embedder) drains it while its reconciler runs every quarter second. Before the rule
"re-send only what the queue no longer holds", every row still queued was re-sent at
every threshold: a document waiting ten thresholds had eleven wake-ups. Now the only
extra message is the one that recovers the dropped wake-up.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from azure.servicebus.aio import ServiceBusClient

from sheaf.adapters.blob_local import LocalBlobStore
from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.adapters.sql import open_store
from sheaf.config import Settings
from sheaf.domain.models import Status
from sheaf.extract import LocalExtractor
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from tests.servicebus_fixtures import ServiceBusEmulator
from worker.runner import Worker

pytestmark = pytest.mark.integration

DOCUMENTS = 300
AFTER = 1.0  # reconcile_after_seconds: the whole drain takes many of these
MAX_MESSAGES_PER_DOCUMENT = 1.1


class SlowEmbedder(LexicalEmbedder):
    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        await asyncio.sleep(0.02)
        return await super().embed(texts)


@pytest.fixture
async def deps(
    tmp_path: Path, sqlite_template: Path, servicebus_emulator: ServiceBusEmulator
) -> AsyncIterator[Deps]:
    shutil.copyfile(sqlite_template, tmp_path / "sheaf.db")
    settings = Settings.from_env(
        {},
        concurrency=1,
        reconcile_after_seconds=AFTER,
        reconcile_interval_seconds=0.25,
        safety_poll_seconds=0,  # only the reconciler may recover the dropped wake-up
        poll_interval_seconds=0.2,
        heartbeat_seconds=1,
        embedder="lexical",  # SlowEmbedder below: hashed words, deterministic
        embedding_dimensions=64,
    )
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}")
    bus = ServiceBusMessageBus.from_connection_string(
        servicebus_emulator.connection_string, servicebus_emulator.queue_name
    )
    yield Deps(
        settings=settings,
        store=store,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        bus=bus,
        extractor=LocalExtractor(),
        embedder=SlowEmbedder(64),
        queue=bus,
    )
    await bus.close()
    await store.close()


async def drop_one_wake_up(emulator: ServiceBusEmulator) -> str:
    """Receive one wake-up and complete it without processing: a lost message."""
    async with (
        ServiceBusClient.from_connection_string(emulator.connection_string) as client,
        client.get_queue_receiver(emulator.queue_name) as receiver,
    ):
        [message] = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
        await receiver.complete_message(message)
    return str(message.message_id).split(":")[0]


async def test_a_backlog_drains_with_one_wake_up_each_and_a_lost_one_recovered(
    deps: Deps, servicebus_emulator: ServiceBusEmulator
) -> None:
    for n in range(DOCUMENTS):

        async def body(n: int = n) -> AsyncIterator[bytes]:
            yield f"document number {n}: ".encode() + b"words and more words " * 20

        await accept_upload(deps, "backlog", f"{n}.txt", body())
    dropped = await drop_one_wake_up(servicebus_emulator)
    await asyncio.sleep(AFTER * 1.5)  # the whole backlog is older than the threshold

    stop = asyncio.Event()
    started = time.monotonic()
    run = asyncio.create_task(Worker(deps).run(stop))
    while (await deps.store.stats()).counts.get("completed", 0) < DOCUMENTS:
        assert time.monotonic() - started < 150, await deps.store.stats()
        await asyncio.sleep(0.5)
    drained = time.monotonic() - started
    while sum(servicebus_emulator.counts(servicebus_emulator.queue_name).values()) > 0:
        await asyncio.sleep(0.2)  # the last settlements
    stop.set()
    await run

    row = await deps.store.get_document(dropped, history=False)
    assert row is not None
    assert row.status is Status.COMPLETED  # recovered
    messages = servicebus_emulator.call(
        lambda: sum(len(done) for done in servicebus_emulator.broker.completed.values())
    )
    per_document = messages / DOCUMENTS
    print(
        f"\n{DOCUMENTS} documents drained in {drained:.1f} s ({drained / AFTER:.0f} reconcile "
        f"thresholds) with {messages} wake-ups: {per_document:.3f} per document"
    )
    assert drained > 5 * AFTER  # a backlog that waited through several thresholds
    assert messages >= DOCUMENTS + 1  # the upload's own, plus the recovery of the dropped one
    assert per_document <= MAX_MESSAGES_PER_DOCUMENT
