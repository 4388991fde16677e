"""`sheaf up` with Service Bus on: the real SDK against the test emulator, end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from tests.e2e.conftest import Proc, free_port, get_json, sheaf_env, start, upload, wait_ready
from tests.samples import encrypt_pdf, make_pdf
from tests.servicebus_fixtures import ServiceBusEmulator

pytestmark = pytest.mark.e2e


async def sheaf_up(
    emulator: ServiceBusEmulator, tmp_path: Path, procs: list[Proc], **settings: str
) -> tuple[str, Proc]:
    port = free_port()
    defaults = {
        "SHEAF_MESSAGE_BUS": "servicebus",
        "SHEAF_SERVICEBUS_CONNECTION_STRING": emulator.connection_string,
        "SHEAF_SERVICEBUS_QUEUE": emulator.queue_name,
        "SHEAF_WORKERS": "2",
    }
    env = sheaf_env(**{**defaults, **settings})
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc)
    return url, proc


async def wait_counts(
    http: aiohttp.ClientSession, url: str, want: dict[str, int], timeout: float = 120
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = (await get_json(http, f"{url}/v1/stats"))["counts"]
        if all(counts.get(k) == v for k, v in want.items()):
            return counts
        assert time.monotonic() < deadline, f"stuck at {counts}, want {want}"
        await asyncio.sleep(0.25)


async def test_fifty_documents_flow_through_messages_alone(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    url, up = await sheaf_up(servicebus_emulator, tmp_path, procs)
    for n in range(50):
        status, _ = await upload(http, url, "bulk", f"{n}.txt", f"document {n} body".encode())
        assert status == 202
    await wait_counts(http, url, {"completed": 50, "queued": 0, "processing": 0})
    # Each message is settled just after its row commits: give the last ones a moment.
    for _ in range(120):
        counts = servicebus_emulator.counts(servicebus_emulator.queue_name)
        if counts["active"] == counts["locked"] == 0:
            break
        await asyncio.sleep(0.25)
    assert counts["active"] == counts["locked"] == counts["dead_letter"] == 0, counts
    # Every lease came from a message: no worker fell back to polling.
    assert "polling the database meanwhile" not in up.output()


async def test_a_permanent_failure_is_dead_lettered_with_an_actionable_reason(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    url, _ = await sheaf_up(servicebus_emulator, tmp_path, procs)
    locked = encrypt_pdf(make_pdf(["confidential"]), "pw")
    status, body = await upload(http, url, "legal", "locked.pdf", locked)
    assert status == 202
    await wait_counts(http, url, {"failed": 1})
    for _ in range(40):  # settlement follows the row's update
        if servicebus_emulator.counts(servicebus_emulator.queue_name)["dead_letter"] == 1:
            break
        await asyncio.sleep(0.25)
    async with (
        ServiceBusClient.from_connection_string(servicebus_emulator.connection_string) as client,
        client.get_queue_receiver(
            servicebus_emulator.queue_name, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as receiver,
    ):
        [message] = await receiver.peek_messages(max_message_count=10)
    assert message.dead_letter_reason == "encrypted"
    description = message.dead_letter_error_description or ""
    assert body["id"] in description
    assert "locked.pdf" in description
    assert "password" in description.lower() or "encrypted" in description.lower()


async def test_poison_and_unknown_messages_are_dead_lettered_at_once(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
) -> None:
    from azure.servicebus import ServiceBusMessage

    await sheaf_up(servicebus_emulator, tmp_path, procs)
    queue = servicebus_emulator.queue_name
    async with (
        ServiceBusClient.from_connection_string(servicebus_emulator.connection_string) as client,
        client.get_queue_sender(queue) as sender,
    ):
        await sender.send_messages(ServiceBusMessage("not json", message_id="poison-1"))
        body = '{"document_id": "nope", "collection": "c", "dispatch_seq": 1}'
        await sender.send_messages(ServiceBusMessage(body, message_id="unknown-1"))
    for _ in range(60):
        if servicebus_emulator.counts(queue)["dead_letter"] == 2:
            break
        await asyncio.sleep(0.25)
    async with (
        ServiceBusClient.from_connection_string(servicebus_emulator.connection_string) as client,
        client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver,
    ):
        messages = await receiver.peek_messages(max_message_count=10)
    reasons = {str(m.message_id): m.dead_letter_reason for m in messages}
    assert reasons == {"poison-1": "malformed_message", "unknown-1": "unknown_document"}
    assert all((m.delivery_count or 0) <= 1 for m in messages)  # at once, not after retries


async def test_an_emulator_outage_falls_back_to_polling_and_loses_nothing(
    servicebus_emulator: ServiceBusEmulator,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    health = free_port()
    url, up = await sheaf_up(
        servicebus_emulator,
        tmp_path,
        procs,
        SHEAF_SERVICEBUS_RETRY_SECONDS="2",
        SHEAF_WORKERS="1",
        SHEAF_WORKER_METRICS_PORT=str(health),
    )
    worker = f"http://127.0.0.1:{health}"

    async def batch(tag: str) -> None:
        for n in range(5):
            status, _ = await upload(http, url, "c", f"{tag}{n}.txt", f"{tag} doc {n}".encode())
            assert status == 202  # a failed send never fails the upload

    await batch("before")
    await wait_counts(http, url, {"completed": 5})
    servicebus_emulator.stop()
    await batch("during")
    await wait_counts(http, url, {"completed": 10, "queued": 0}, timeout=180)
    assert "polling the database meanwhile" in up.output()
    # Degraded is still ready (polling works), and both /readyz and the metric say so.
    assert await queue_mode(http, worker) == ("degraded", 1.0)
    servicebus_emulator.start()
    for _ in range(240):  # the consumer reconnects within its retry period
        if await queue_mode(http, worker) == ("servicebus", 1.0):
            break
        await asyncio.sleep(0.25)
    assert await queue_mode(http, worker) == ("servicebus", 1.0)
    await batch("after")
    await wait_counts(http, url, {"completed": 15, "queued": 0, "processing": 0}, timeout=180)


async def queue_mode(http: aiohttp.ClientSession, worker: str) -> tuple[str, float]:
    """The worker's queue mode as /readyz reports it, and its `sheaf_queue_mode` value."""
    body = await get_json(http, f"{worker}/readyz")
    mode = body["checks"]["queue"]["mode"]
    async with http.get(f"{worker}/metrics") as response:
        text = await response.text()
    [value] = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f'sheaf_queue_mode{{mode="{mode}"')
    ]
    return mode, value
