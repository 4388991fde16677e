"""DLQ tooling with the real SDK against the emulator, on the in-memory store.

Messages are dead-lettered the way the worker's consumer does it (reason = the row's
error_code, a description naming file, cause and document id), then listed, shown,
resubmitted (compare-and-set) and purged through `sheaf.services.dlq`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from azure.servicebus import ServiceBusMessage

from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.domain.messages import decode
from sheaf.domain.models import (
    Dispatch,
    Document,
    ErrorInfo,
    NewDocument,
    ReleaseOutcome,
    Status,
)
from sheaf.errors import ClientError, NotFound
from sheaf.services import dlq
from sheaf.services.deps import Deps
from tests.servicebus_fixtures import ServiceBusEmulator
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.integration

DLQ_ADDRESS = "documents/$DeadLetterQueue"


class Crash(BaseException):
    """A process dying mid-way: nothing after it runs, nothing is cleaned up."""


@pytest.fixture
async def bus(servicebus_emulator: ServiceBusEmulator) -> AsyncIterator[ServiceBusMessageBus]:
    opened = ServiceBusMessageBus.from_connection_string(
        servicebus_emulator.connection_string, servicebus_emulator.queue_name
    )
    yield opened
    await opened.close()


@pytest.fixture
def deps(bus: ServiceBusMessageBus) -> Deps:
    return dataclasses.replace(make_deps(), bus=bus, queue=bus)


async def failed_document(deps: Deps, name: str = "report.pdf", resent: bool = False) -> Document:
    """A row that failed permanently, as a worker leaves it (`resent`: by the reconciler
    first, so its upload message is stale)."""
    document_id = str(uuid.uuid4())
    await deps.store.create_document(
        NewDocument(document_id, "c", name, "text/plain", 5, uuid.uuid4().hex, f"b/{name}", 3)
    )
    if resent:
        assert await deps.store.claim_stale_dispatches(0, 10)
    result = await deps.store.acquire_document_lease(document_id, "w1", 30)
    assert result.lease is not None
    error = ErrorInfo("embedding_model_not_found", "the embedding model does not exist")
    await deps.store.release_document_lease(
        document_id, result.lease.token, ReleaseOutcome.PERMANENT, error
    )
    document = await deps.store.get_document(document_id, history=False)
    assert document is not None
    assert document.status is Status.FAILED
    return document


async def dead_letter(bus: ServiceBusMessageBus, documents: Sequence[Document]) -> None:
    """Send each document's wake-up, then dead-letter it as the consumer does."""
    await bus.send([Dispatch(d.id, d.collection, d.dispatch_seq) for d in documents])
    by_id = {d.id: d for d in documents}
    async with bus.receiver(prefetch=0) as receiver:
        pending = set(by_id)
        while pending:
            for message in await receiver.receive_messages(len(pending), max_wait_time=2):
                doc = by_id[decode(b"".join(message.body)).document_id]
                await receiver.dead_letter_message(
                    message,
                    reason=doc.error_code,
                    error_description=f"{doc.filename} in {doc.collection} failed: "
                    f"{doc.last_error} (document {doc.id})",
                )
                pending.discard(doc.id)


async def dead_letter_raw(bus: ServiceBusMessageBus, body: str, message_id: str) -> None:
    sender = bus.client.get_queue_sender(bus.queue)
    async with sender:
        await sender.send_messages(ServiceBusMessage(body, message_id=message_id))
    async with bus.receiver(prefetch=0) as receiver:
        [message] = await receiver.receive_messages(1, max_wait_time=2)
        await receiver.dead_letter_message(message, reason="malformed_message")


async def queued_wake_ups(bus: ServiceBusMessageBus) -> list[str]:
    """Drain the main queue: the message ids of the wake-ups waiting there."""
    ids = []
    async with bus.receiver(prefetch=0) as receiver:
        while batch := await receiver.receive_messages(10, max_wait_time=1):
            for message in batch:
                ids.append(str(message.message_id))
                await receiver.complete_message(message)
    return sorted(ids)


async def test_list_and_show_join_messages_with_their_documents(
    deps: Deps, bus: ServiceBusMessageBus
) -> None:
    first, second = await failed_document(deps, "a.pdf"), await failed_document(deps, "b.pdf")
    await dead_letter(bus, [first, second])
    await dead_letter_raw(bus, "not json", "poison-1")

    page = await dlq.list_entries(deps)
    assert [(e.document_id, e.filename) for e in page.entries] == [
        (first.id, "a.pdf"),
        (second.id, "b.pdf"),
        (None, None),
    ]
    entry = page.entries[0]
    assert entry.reason == "embedding_model_not_found"
    assert entry.description is not None
    assert first.id in entry.description
    assert entry.enqueued_at is not None
    assert entry.document_status is Status.FAILED
    assert entry.message_id == f"{first.id}:{first.dispatch_seq}"
    assert page.entries[2].problem is not None
    assert "not JSON" in page.entries[2].problem

    only = await dlq.list_entries(deps, reason="malformed_message")
    assert [e.message_id for e in only.entries] == ["poison-1"]
    limited = await dlq.list_entries(deps, limit=1)
    assert len(limited.entries) == 1
    assert limited.more

    shown = await dlq.show(deps, entry.sequence_number)
    assert shown == entry
    with pytest.raises(NotFound):
        await dlq.show(deps, 999)


async def test_resubmit_is_compare_and_set_and_a_rerun_changes_nothing(
    deps: Deps, bus: ServiceBusMessageBus, servicebus_emulator: ServiceBusEmulator
) -> None:
    doc = await failed_document(deps)
    await dead_letter(bus, [doc])
    await dead_letter_raw(bus, '{"document_id": "x"}', "poison-1")

    dry = await dlq.resubmit(deps, reason="embedding_model_not_found", dry_run=True)
    assert [i.outcome for i in dry.items] == [dlq.Outcome.REDRIVEN]
    assert dry.dry_run
    assert (await deps.store.get_document(doc.id, history=False)).status is Status.FAILED  # type: ignore[union-attr]

    result = await dlq.resubmit(deps, reason="embedding_model_not_found")
    assert [(i.document_id, i.outcome) for i in result.items] == [(doc.id, dlq.Outcome.REDRIVEN)]
    row = await deps.store.get_document(doc.id, history=False)
    assert row is not None
    assert row.status is Status.QUEUED
    assert row.attempts == 0
    assert row.dispatch_seq == doc.dispatch_seq + 1
    assert servicebus_emulator.counts("documents")["dead_letter"] == 1  # the poison stays

    again = await dlq.resubmit(deps, reason="embedding_model_not_found")
    assert again.items == []
    assert again.not_found == []
    poison = await dlq.resubmit(deps, reason="malformed_message")
    assert [i.outcome for i in poison.items] == [dlq.Outcome.MALFORMED]
    after = await deps.store.get_document(doc.id, history=False)
    assert after is not None
    assert after.dispatch_seq == row.dispatch_seq
    assert await queued_wake_ups(bus) == [f"{doc.id}:{row.dispatch_seq}"]  # exactly one


async def test_messages_of_documents_no_longer_failed_are_only_completed(
    deps: Deps, bus: ServiceBusMessageBus, servicebus_emulator: ServiceBusEmulator
) -> None:
    retried, deleted = await failed_document(deps, "a.pdf"), await failed_document(deps, "b.pdf")
    await dead_letter(bus, [retried, deleted])
    await deps.store.retry_document(retried.id)  # `sheaf failed retry` got there first
    await deps.store.delete_document(deleted.id)
    seqs = [e.sequence_number for e in (await dlq.list_entries(deps)).entries]

    result = await dlq.resubmit(deps, sequence_numbers=[*seqs, 4242])
    assert {i.document_id: i.outcome for i in result.items} == {
        retried.id: dlq.Outcome.ALREADY_HANDLED,
        deleted.id: dlq.Outcome.ALREADY_HANDLED,
    }
    assert result.not_found == [4242]
    assert servicebus_emulator.counts("documents")["dead_letter"] == 0
    row = await deps.store.get_document(retried.id, history=False)
    assert row is not None
    assert row.dispatch_seq == retried.dispatch_seq + 1


async def test_an_older_message_of_the_current_failure_redrives_once(
    deps: Deps, bus: ServiceBusMessageBus
) -> None:
    # The stale upload message woke the failing attempt; the reconciler's re-send (the
    # row's current seq) was dead-lettered too, by a worker that found the row failed.
    doc = await failed_document(deps, resent=True)
    stale = dataclasses.replace(doc, dispatch_seq=doc.dispatch_seq - 1)
    await dead_letter(bus, [stale])
    await dead_letter(bus, [doc])
    result = await dlq.resubmit(deps, reason="embedding_model_not_found")
    assert [(i.message_id, i.outcome) for i in result.items] == [
        (f"{doc.id}:{stale.dispatch_seq}", dlq.Outcome.REDRIVEN),
        (f"{doc.id}:{doc.dispatch_seq}", dlq.Outcome.ALREADY_HANDLED),
    ]
    row = await deps.store.get_document(doc.id, history=False)
    assert row is not None
    assert row.dispatch_seq == doc.dispatch_seq + 1


async def test_a_message_newer_than_its_row_is_left_alone(
    deps: Deps, bus: ServiceBusMessageBus
) -> None:
    doc = await failed_document(deps)
    await dead_letter(bus, [dataclasses.replace(doc, dispatch_seq=doc.dispatch_seq + 5)])
    result = await dlq.resubmit(deps, reason="embedding_model_not_found")
    assert [i.outcome for i in result.items] == [dlq.Outcome.INCONSISTENT]
    assert len((await dlq.list_entries(deps)).entries) == 1
    row = await deps.store.get_document(doc.id, history=False)
    assert row is not None
    assert row.status is Status.FAILED


@pytest.mark.parametrize("crash_in", ["retry_document", "send"])
async def test_a_crash_between_reset_and_completion_recovers_on_rerun(
    deps: Deps,
    bus: ServiceBusMessageBus,
    servicebus_emulator: ServiceBusEmulator,
    crash_in: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = await failed_document(deps)
    await dead_letter(bus, [doc])
    target = deps.store if crash_in == "retry_document" else bus
    original = getattr(target, crash_in)

    async def then_crash(*args: object) -> object:
        await original(*args)
        raise Crash

    monkeypatch.setattr(target, crash_in, then_crash)
    with pytest.raises(Crash):
        await dlq.resubmit(deps, reason="embedding_model_not_found")
    monkeypatch.undo()
    row = await deps.store.get_document(doc.id, history=False)
    assert row is not None
    assert row.status is Status.QUEUED
    assert servicebus_emulator.counts("documents")["dead_letter"] == 1  # not completed
    servicebus_emulator.expire_locks(DLQ_ADDRESS)  # the crashed run's lock runs out

    rerun = await dlq.resubmit(deps, reason="embedding_model_not_found")
    assert [i.outcome for i in rerun.items] == [dlq.Outcome.ALREADY_HANDLED]
    assert servicebus_emulator.counts("documents")["dead_letter"] == 0
    after = await deps.store.get_document(doc.id, history=False)
    assert after is not None
    assert after.dispatch_seq == row.dispatch_seq
    # Exactly one wake-up for the reset, whether the crashed run had sent it or not.
    assert await queued_wake_ups(bus) == [f"{doc.id}:{row.dispatch_seq}"]


async def test_purge_needs_confirmation_and_honours_the_filter(
    deps: Deps, bus: ServiceBusMessageBus, servicebus_emulator: ServiceBusEmulator
) -> None:
    doc = await failed_document(deps)
    await dead_letter(bus, [doc])
    await dead_letter_raw(bus, "not json", "poison-1")
    with pytest.raises(ClientError, match="confirm"):
        await dlq.purge(deps, reason="malformed_message")
    result = await dlq.purge(deps, reason="malformed_message", confirm=True)
    assert [(i.message_id, i.outcome) for i in result.items] == [("poison-1", dlq.Outcome.PURGED)]
    [left] = (await dlq.list_entries(deps)).entries
    assert left.document_id == doc.id
    row = await deps.store.get_document(doc.id, history=False)
    assert row is not None
    assert row.status is Status.FAILED
    await dlq.purge(deps, confirm=True)
    assert servicebus_emulator.counts("documents")["dead_letter"] == 0


async def test_resubmit_needs_a_filter(deps: Deps) -> None:
    with pytest.raises(ClientError, match="say which"):
        await dlq.resubmit(deps)


async def test_without_service_bus_the_dlq_is_a_clear_client_error() -> None:
    with pytest.raises(ClientError, match="SHEAF_MESSAGE_BUS=servicebus") as info:
        await dlq.list_entries(make_deps())
    assert "sheaf failed list" in info.value.message
