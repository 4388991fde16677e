"""Service Bus under failure, end to end: retries, kills, outages and long documents.

Each test runs real Sheaf processes against the Service Bus test emulator (the unmodified
SDK on the wire) and, where the embedder matters, the fake OpenAI server, whose scripted
faults (`fail_next`) stand in for a flaky or slow embedding service. What the emulator saw
(completed message ids with their delivery counts, renew-lock calls, dropped duplicates)
is read from the emulator itself, not from Sheaf's logs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.servicebus import ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient
from sqlalchemy.engine import make_url

from sheaf.adapters.sql.migrate import upgrade
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from tests.e2e.conftest import (
    ROOT,
    Proc,
    free_port,
    get_json,
    sheaf_env,
    start,
    upload,
    wait_ready,
    wait_status,
)
from tests.e2e.tcp_proxy import TcpProxy
from tests.e2e.test_servicebus import sheaf_up, wait_counts
from tests.openai_fake import FakeOpenAI, Fault, openai_fake_fixture  # noqa: F401 (fixture)
from tests.samples import make_pdf
from tests.servicebus_fixtures import ServiceBusEmulator

pytestmark = pytest.mark.e2e

OPENAI = {
    "SHEAF_EMBEDDER": "openai",
    "SHEAF_OPENAI_MODEL": "text-embedding-3-small",
    "SHEAF_EMBEDDING_DIMENSIONS": "64",
}


def embedder_at(fake: FakeOpenAI) -> dict[str, str]:
    return {**OPENAI, "SHEAF_OPENAI_BASE_URL": fake.url + "/v1"}


def bus_env(emulator: ServiceBusEmulator, queue: str, **settings: str) -> dict[str, str]:
    return sheaf_env(
        SHEAF_MESSAGE_BUS="servicebus",
        SHEAF_SERVICEBUS_CONNECTION_STRING=emulator.connection_string,
        SHEAF_SERVICEBUS_QUEUE=queue,
        **settings,
    )


async def until(condition: Any, timeout: float, what: str) -> None:
    """Poll a (sync) condition until it holds; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def dead_letters(emulator: ServiceBusEmulator, queue: str) -> list[tuple[str, str, str]]:
    """(message id, reason, description) of every message in `queue`'s dead-letter queue."""

    def read() -> list[tuple[str, str, str]]:
        entity = emulator.broker.entity(queue + "/$DeadLetterQueue")
        return [
            (
                str(m.message.prop("message_id")),
                m.dead_letter_reason or "",
                m.dead_letter_description or "",
            )
            for m in entity.messages.values()
        ]

    return emulator.call(read)


def settled(emulator: ServiceBusEmulator, queue: str) -> bool:
    counts = emulator.counts(queue)
    return counts["active"] == counts["locked"] == counts["scheduled"] == 0


async def test_a_transient_error_twice_is_retried_by_scheduled_messages(
    servicebus_emulator: ServiceBusEmulator,
    openai_fake: FakeOpenAI,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    # 401 is transient for the embedder and not retried inside it: one per attempt.
    openai_fake.fail_next(Fault(401, message="Access denied due to invalid key."), times=2)
    url, up = await sheaf_up(
        servicebus_emulator, tmp_path, procs, SHEAF_WORKERS="1", **embedder_at(openai_fake)
    )
    status, body = await upload(http, url, "c", "notes.txt", b"quarterly results " * 40)
    assert status == 202
    doc = await wait_status(http, url, body["id"], {"completed", "failed"})
    assert doc["status"] == "completed", doc
    assert doc["attempts"] == 3
    assert [a["outcome"] for a in doc["history"]] == ["transient", "transient", "completed"], doc
    queue = servicebus_emulator.queue_name
    await until(lambda: settled(servicebus_emulator, queue), 20, "the queue to drain")
    done = servicebus_emulator.completed(queue)
    # The upload's message, then one scheduled message per retry, each a fresh dispatch
    # (a scheduled wake-up's id also names its time: `{id}:{seq}:at:{epoch}`).
    dispatches = [c.message_id.split(":at:")[0] for c in done]
    assert dispatches == [f"{body['id']}:{n}" for n in (1, 2, 3)], done
    assert [":at:" in c.message_id for c in done] == [False, True, True], done
    assert all(c.delivery_count == 0 for c in done), done
    assert servicebus_emulator.counts(queue)["dead_letter"] == 0
    assert "polling the database meanwhile" not in up.output()


async def test_a_long_document_keeps_its_message_lock_renewed(
    servicebus_emulator: ServiceBusEmulator,
    openai_fake: FakeOpenAI,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    queue = servicebus_emulator.add_queue(
        "short-lock", lock_duration=2.0, max_delivery_count=10, duplicate_detection_window=600.0
    )
    openai_fake.fail_next(Fault.slow(6.0))  # the document's one embedding call takes 6 s
    url, _ = await sheaf_up(
        servicebus_emulator,
        tmp_path,
        procs,
        SHEAF_SERVICEBUS_QUEUE=queue,
        SHEAF_WORKERS="1",
        **embedder_at(openai_fake),
    )
    started = time.monotonic()
    status, body = await upload(http, url, "c", "long.txt", b"a long document " * 40)
    assert status == 202
    doc = await wait_status(http, url, body["id"], {"completed", "failed"})
    assert doc["status"] == "completed", doc
    assert time.monotonic() - started >= 6.0
    assert doc["attempts"] == 1
    await until(lambda: settled(servicebus_emulator, queue), 10, "the message to be settled")
    assert servicebus_emulator.renew_lock_count(queue) >= 2
    [done] = servicebus_emulator.completed(queue)
    assert (done.message_id, done.delivery_count) == (f"{body['id']}:1", 0)


async def test_a_lost_message_is_resent_by_the_reconciler_despite_duplicate_detection(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    queue = servicebus_emulator.queue_name  # duplicate detection over 10 minutes
    database = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    # `sheaf up` migrates by itself; `sheaf api` and `sheaf worker` expect a migrated database.
    await asyncio.to_thread(upgrade, database)
    env = bus_env(
        servicebus_emulator,
        queue,
        SHEAF_DATABASE_URL=database,
        SHEAF_BLOB_DIR=str(tmp_path / "blobs"),
        SHEAF_RECONCILE_AFTER_SECONDS="3",
    )
    port = free_port()
    api = start(procs, ["-m", "sheaf", "api", "--port", str(port)], env, tmp_path, "api")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, api)
    status, body = await upload(http, url, "c", "lost.txt", b"a message that goes missing")
    assert status == 202
    document_id = body["id"]
    # Lose the upload's message: receive-and-delete it, as if it had expired or been purged.
    async with (
        ServiceBusClient.from_connection_string(servicebus_emulator.connection_string) as client,
        client.get_queue_receiver(
            queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, max_wait_time=5
        ) as receiver,
    ):
        [lost] = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
    assert str(lost.message_id) == f"{document_id}:1"

    # Only the API's reconciler runs: it must put a fresh message on the queue.
    await until(lambda: servicebus_emulator.counts(queue)["active"] >= 1, 30, "a re-send")
    start(procs, ["-m", "sheaf", "worker"], env, tmp_path, "worker")
    doc = await wait_status(http, url, document_id, {"completed", "failed"})
    assert (doc["status"], doc["attempts"]) == ("completed", 1), doc
    assert servicebus_emulator.dropped_duplicates(queue) == []
    await until(lambda: settled(servicebus_emulator, queue), 20, "the queue to drain")
    completed_ids = [c.message_id for c in servicebus_emulator.completed(queue)]
    assert completed_ids, "the worker completed no message"
    assert all(m.startswith(f"{document_id}:") and m != f"{document_id}:1" for m in completed_ids)


async def test_a_worker_killed_mid_document_is_recovered_with_service_bus_on(
    servicebus_emulator: ServiceBusEmulator,
    fresh_postgres_url: str,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    queue = servicebus_emulator.add_queue(
        "kill", lock_duration=5.0, max_delivery_count=10, duplicate_detection_window=600.0
    )
    env = bus_env(
        servicebus_emulator,
        queue,
        SHEAF_DATABASE_URL=fresh_postgres_url,
        SHEAF_BLOB_DIR=str(tmp_path / "blobs"),
        SHEAF_LEASE_SECONDS="3",
        SHEAF_HEARTBEAT_SECONDS="1",
        SHEAF_CHUNK_SIZE="300",
        SHEAF_CHUNK_OVERLAP="40",
        SHEAF_EMBED_BATCH_SIZE="2",
    )
    port = free_port()
    api = start(procs, ["-m", "sheaf", "api", "--port", str(port)], env, tmp_path, "api")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, api)
    pages = [" ".join(f"ledger{p} audit{i} control{i % 7}" for i in range(60)) for p in range(4)]
    status, body = await upload(http, url, "kill", "big.pdf", make_pdf(pages))
    assert status == 202
    document_id = body["id"]

    # The victim kills itself (SIGKILL) right after its first chunk batch commits.
    victim = start(procs, [str(ROOT / "tests/e2e/killable_worker.py")], env, tmp_path, "victim")
    assert await asyncio.to_thread(victim.popen.wait, 60) == -9, victim.output()
    start(procs, ["-m", "sheaf", "worker"], env, tmp_path, "rescuer")
    doc = await wait_status(http, url, document_id, {"completed", "failed"}, timeout=90)
    assert doc["status"] == "completed", doc
    assert doc["attempts"] == 2
    assert [a["outcome"] for a in doc["history"]] == ["expired", "completed"]

    status, clean = await upload(http, url, "kill", "clean.pdf", make_pdf(pages))
    clean_doc = await wait_status(http, url, clean["id"], {"completed"}, timeout=60)
    assert doc["chunk_count"] == clean_doc["chunk_count"] > 2
    # No duplicate chunks: the recovered document's chunks are exactly a clean run's.
    async with open_deps(Settings.from_env(env)) as deps:
        recovered = await deps.store.document_chunks(document_id)
        assert recovered == await deps.store.document_chunks(clean["id"])
    await until(lambda: settled(servicebus_emulator, queue), 30, "the queue to drain")
    assert servicebus_emulator.counts(queue)["dead_letter"] == 0


async def test_a_database_outage_while_messages_arrive_dead_letters_nothing(
    servicebus_emulator: ServiceBusEmulator,
    fresh_postgres_url: str,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    """The worker reaches PostgreSQL through a proxy that is cut for 30 s; the API does not,
    so uploads (and their messages) keep arriving while the worker cannot reach the rows.
    The queue's 5 s lock and max delivery count of 3 would dead-letter a message within
    the outage if the worker abandoned it or let its lock lapse."""
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    queue = servicebus_emulator.add_queue(
        "outage", lock_duration=5.0, max_delivery_count=3, duplicate_detection_window=600.0
    )
    database = make_url(fresh_postgres_url)
    proxy = await TcpProxy.start(database.host or "127.0.0.1", database.port or 5432)
    try:
        common = {
            "SHEAF_BLOB_DIR": str(tmp_path / "blobs"),
            "SHEAF_LEASE_SECONDS": "10",
            "SHEAF_HEARTBEAT_SECONDS": "2",
        }
        api_env = bus_env(
            servicebus_emulator, queue, SHEAF_DATABASE_URL=fresh_postgres_url, **common
        )
        via_proxy = database.set(host="127.0.0.1", port=proxy.port)
        health = free_port()
        worker_env = bus_env(
            servicebus_emulator,
            queue,
            SHEAF_DATABASE_URL=via_proxy.render_as_string(hide_password=False),
            SHEAF_WORKER_METRICS_PORT=str(health),
            **common,
        )
        port = free_port()
        api = start(procs, ["-m", "sheaf", "api", "--port", str(port)], api_env, tmp_path, "api")
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, api)
        worker = start(procs, ["-m", "sheaf", "worker"], worker_env, tmp_path, "worker")
        await wait_ready(f"http://127.0.0.1:{health}", worker)

        ids = [await _upload_text(http, url, f"before {n}") for n in range(3)]
        await wait_counts(http, url, {"completed": 3})
        await proxy.cut()
        cut_at = time.monotonic()
        ids += [await _upload_text(http, url, f"during {n}") for n in range(5)]
        async with http.get(f"http://127.0.0.1:{health}/readyz") as response:
            body = await response.json()
        assert response.status == 503, body
        assert body["checks"]["database"]["ok"] is False, body
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))
        assert dead_letters(servicebus_emulator, queue) == []
        await proxy.restore()

        await wait_counts(http, url, {"completed": 8, "queued": 0, "processing": 0}, timeout=120)
        for document_id in ids:
            doc = await get_json(http, f"{url}/v1/documents/{document_id}")
            assert doc["status"] == "completed", doc
        await until(lambda: settled(servicebus_emulator, queue), 30, "the queue to drain")
        assert dead_letters(servicebus_emulator, queue) == []
        assert worker.popen.poll() is None, worker.output()
    finally:
        await proxy.close()


async def _upload_text(http: aiohttp.ClientSession, url: str, text: str) -> str:
    status, body = await upload(http, url, "c", f"{text}.txt", f"{text} body".encode())
    assert status == 202, body
    return str(body["id"])


async def test_the_safety_net_poll_takes_documents_whose_wake_up_never_comes(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    """A misconfigured API sends its wake-ups to another queue: the messages are sent (so
    the reconciler sees nothing wrong) but no worker ever receives them. The workers' slow
    poll for overdue rows still completes the document, and says what looks wrong."""
    elsewhere = servicebus_emulator.add_queue("elsewhere")
    database = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    await asyncio.to_thread(upgrade, database)
    common = {
        "SHEAF_DATABASE_URL": database,
        "SHEAF_BLOB_DIR": str(tmp_path / "blobs"),
        "SHEAF_RECONCILE_AFTER_SECONDS": "3600",
        "SHEAF_SAFETY_POLL_SECONDS": "1",
        "SHEAF_SAFETY_POLL_AFTER_SECONDS": "2",
    }
    api_env = bus_env(servicebus_emulator, elsewhere, **common)
    port = free_port()
    api = start(procs, ["-m", "sheaf", "api", "--port", str(port)], api_env, tmp_path, "api")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, api)
    worker_env = bus_env(servicebus_emulator, servicebus_emulator.queue_name, **common)
    worker = start(procs, ["-m", "sheaf", "worker"], worker_env, tmp_path, "worker")

    started = time.monotonic()
    document_id = await _upload_text(http, url, "misrouted")
    doc = await wait_status(http, url, document_id, {"completed", "failed"}, timeout=60)
    assert doc["status"] == "completed", doc
    assert time.monotonic() - started >= 2.0  # not before it was overdue
    assert servicebus_emulator.counts(elsewhere)["active"] == 1  # the wake-up went astray
    assert servicebus_emulator.completed(servicebus_emulator.queue_name) == []
    assert "wake-up message is overdue" in worker.output()
