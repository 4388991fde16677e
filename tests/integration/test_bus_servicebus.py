"""The Service Bus producer with the real SDK against the test emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sheaf.adapters.bus_servicebus import COOL_DOWN, SEND_TIMEOUT, ServiceBusMessageBus
from sheaf.domain.messages import decode
from sheaf.domain.models import Dispatch
from sheaf.errors import TransientError
from tests.servicebus_fixtures import ServiceBusEmulator

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(servicebus_emulator: ServiceBusEmulator) -> AsyncIterator[ServiceBusMessageBus]:
    opened = ServiceBusMessageBus.from_connection_string(
        servicebus_emulator.connection_string, servicebus_emulator.queue_name
    )
    yield opened
    await opened.close()


async def drain(bus: ServiceBusMessageBus, wait: float = 1.0) -> list[tuple[str, Dispatch]]:
    received = []
    async with bus.receiver(prefetch=10) as receiver:
        for message in await receiver.receive_messages(max_message_count=10, max_wait_time=wait):
            received.append((str(message.message_id), decode(b"".join(message.body))))
            await receiver.complete_message(message)
    return received


async def test_sent_dispatches_arrive_as_wake_ups(bus: ServiceBusMessageBus) -> None:
    await bus.send([Dispatch("d1", "audit", 1), Dispatch("d2", "audit", 4)])
    assert sorted(await drain(bus)) == [
        ("d1:1", Dispatch("d1", "audit", 1)),
        ("d2:4", Dispatch("d2", "audit", 4)),
    ]


async def test_duplicate_detection_drops_a_resend_but_not_a_recovery(
    bus: ServiceBusMessageBus,
) -> None:
    await bus.send([Dispatch("d1", "c", 1)])
    await bus.send([Dispatch("d1", "c", 1)])  # the same send twice: a true duplicate
    await bus.send([Dispatch("d1", "c", 2)])  # a recovery bumped dispatch_seq: delivered
    assert sorted(mid for mid, _ in await drain(bus)) == ["d1:1", "d1:2"]


async def test_future_dispatches_are_scheduled(bus: ServiceBusMessageBus) -> None:
    later = datetime.now(UTC) + timedelta(seconds=4)  # opening a receiver takes ~0.5 s
    await bus.send([Dispatch("d1", "c", 2, not_before=later)])
    assert await drain(bus, wait=0.5) == []
    [(_, wake_up)] = await drain(bus, wait=6)
    assert datetime.now(UTC) >= later
    assert wake_up == Dispatch("d1", "c", 2)


async def test_an_outage_is_a_transient_error_and_recovery_needs_no_restart(
    bus: ServiceBusMessageBus, servicebus_emulator: ServiceBusEmulator
) -> None:
    await bus.send([Dispatch("d1", "c", 1)])
    servicebus_emulator.stop()
    started = time.monotonic()
    with pytest.raises(TransientError, match="unreachable") as info:
        await bus.send([Dispatch("d2", "c", 1)])
    assert info.value.code == "servicebus_unavailable"
    assert time.monotonic() - started < SEND_TIMEOUT + 2  # an upload never waits long
    servicebus_emulator.start()
    # Right after a failure sends fail fast (no connection attempt) for a cool-down...
    with pytest.raises(TransientError, match="moments ago"):
        await bus.send([Dispatch("d3", "c", 1)])
    await asyncio.sleep(COOL_DOWN)
    await bus.send([Dispatch("d3", "c", 1)])  # ...after which the next send reconnects
    assert "d3:1" in [mid for mid, _ in await drain(bus)]
