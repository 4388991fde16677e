"""The Service Bus consumer: peek-lock wake-ups, settled by what the database decided.

A message only names a document. The worker acquires the lease through the store, runs the
pipeline, reads the row back and settles the message from the row (ARCHITECTURE.md §4):

    no lease: terminal / held / stale seq    complete (nothing to do)
    no lease: missing document, bad body     dead-letter: unknown_document / malformed_message
    no lease: not ready, message current     schedule a wake-up at not_before, complete
    completed                                complete
    queued again (transient failure)         schedule the retry at not_before, complete
    failed                                   dead-letter with the reason and what to do
    lease lost to another worker             complete (the other worker owns it now)
    shutting down mid-document               abandon (the row was released as interrupted)
    database or blob store unreachable       keep the message locked, back off, stop receiving

The message lock is renewed while a document is processed (`keep_locked`); if it is lost
anyway, settling fails harmlessly and the redelivery finds the row terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver
from azure.servicebus.exceptions import ServiceBusError

from sheaf import metrics, observability
from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.aio import wait_event
from sheaf.domain.messages import MalformedMessage, WakeUp, decode
from sheaf.domain.models import AcquireOutcome, AcquireResult, Dispatch, Document, Status
from sheaf.errors import TransientError
from sheaf.services.deps import Deps
from sheaf.services.processing import process_document

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class Slots(Protocol):
    """The worker's concurrency slots, shared by the consumer and the polling loop."""

    def free(self) -> int: ...

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None: ...

    async def wait_for_slot(self, stop: asyncio.Event) -> None: ...

    def after_attempt(self, outcome: str) -> None: ...

    async def wait_for_dependencies(self, stop: asyncio.Event) -> None: ...

    async def drain(self) -> None: ...


class Consumer:
    def __init__(self, deps: Deps, bus: ServiceBusMessageBus, slots: Slots) -> None:
        self.deps = deps
        self.bus = bus
        self.slots = slots
        self.settings = deps.settings
        self.healthy = asyncio.Event()  # cleared while the database is unreachable
        self.healthy.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until `stop`, then let documents in flight finish or be released.

        Raises `ServiceBusError` when Service Bus is unreachable; the worker then polls.
        """
        async with self.bus.receiver(prefetch=self.settings.servicebus_prefetch) as receiver:
            observability.export_queue_mode("servicebus")  # the receive link is open
            while not stop.is_set():
                await wait_event(self.healthy, None)
                await self.slots.wait_for_dependencies(stop)
                free = self.slots.free()
                if free <= 0:
                    await self.slots.wait_for_slot(stop)
                    continue
                messages = await receiver.receive_messages(
                    max_message_count=free, max_wait_time=self.settings.poll_interval_seconds
                )
                for message in messages:
                    metrics.SERVICEBUS_RECEIVED.inc()
                    self.slots.spawn(self.handle(receiver, message), str(message.message_id))
            await self.slots.drain()  # settle while the receiver is still open

    async def handle(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage
    ) -> None:
        limit = self.settings.lock_renewal_seconds
        renewal = asyncio.create_task(keep_locked(receiver, message, limit))
        try:
            await self._handle(receiver, message)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _handle(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage
    ) -> None:
        settle = Settlement(receiver, message)
        try:
            wake = decode(b"".join(message.body))
        except MalformedMessage as exc:
            await settle.dead_letter("malformed_message", f"{exc.message}; message dropped")
            return
        result = await self._acquire(wake)
        if result.lease is None:
            await self._not_acquired(settle, wake, result)
            return
        try:
            outcome = await process_document(self.deps, result.lease)
        except asyncio.CancelledError:
            await asyncio.shield(settle.abandon())  # released as interrupted already
            raise
        self.slots.after_attempt(outcome)
        await self._after(settle, wake)

    async def _acquire(self, wake: WakeUp) -> AcquireResult:
        """Acquire, riding out database outages with the message kept locked."""
        delay = self.settings.poll_interval_seconds
        while True:
            try:
                result = await self.deps.store.acquire_document_lease(
                    wake.document_id, self.settings.worker_id, self.settings.lease_seconds
                )
            except TransientError as exc:
                if self.healthy.is_set():
                    log.warning(
                        "database unreachable; pausing receives", extra={"error": exc.message}
                    )
                self.healthy.clear()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if not self.healthy.is_set():
                log.info("database reachable again; receiving")
            self.healthy.set()
            return result

    async def _not_acquired(self, settle: Settlement, wake: WakeUp, result: AcquireResult) -> None:
        outcome = result.outcome
        if outcome is AcquireOutcome.MISSING:
            await settle.dead_letter(
                "unknown_document",
                f"no document {wake.document_id} exists in collection {wake.collection}; "
                "the message cannot be processed and was set aside",
            )
            return
        current = result.dispatch_seq is not None and wake.dispatch_seq >= result.dispatch_seq
        if outcome is AcquireOutcome.NOT_READY and current:
            await self._wake_later(wake, result.not_before)
        await settle.complete()

    async def _after(self, settle: Settlement, wake: WakeUp) -> None:
        document = await self.deps.store.get_document(wake.document_id, history=False)
        if document is not None and document.status is Status.FAILED:
            await settle.dead_letter(document.error_code or "failed", _description(document))
            return
        if document is not None and document.status is Status.QUEUED and document.not_before:
            await self._wake_later(
                WakeUp(document.id, document.collection, document.dispatch_seq),
                document.not_before,
            )
        await settle.complete()

    async def _wake_later(self, wake: WakeUp, at: datetime | None) -> None:
        dispatch = Dispatch(wake.document_id, wake.collection, wake.dispatch_seq, not_before=at)
        try:
            await self.bus.send([dispatch])
            metrics.SERVICEBUS_SCHEDULED.inc()
        except TransientError as exc:
            log.warning(
                "could not schedule the wake-up; the reconciler will", extra={"error": exc.message}
            )


# Renew when about half of the lock is left, never more often than this, never less often
# than the cap (so a clock skew that overstates the lock cannot make us renew too late).
MIN_RENEW_INTERVAL = 0.25
MAX_RENEW_INTERVAL = 10.0


async def keep_locked(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, limit: float
) -> None:
    """Renew `message`'s lock until cancelled or `limit` seconds have passed.

    Not the SDK's `AutoLockRenewer`: it checks once a second and, for locks shorter than
    ~10 s, renews only in the last 75 % of whole seconds left, so a 2 s lock expires
    between two of its checks. Here the interval follows the lock actually granted: half
    of what is left after each renewal, clamped to [0.25 s, 10 s]. A failed renewal ends
    the loop: processing carries on under the SQL lease, settling then fails harmlessly.
    """
    deadline = time.monotonic() + limit
    while True:
        left = _lock_left(message)
        interval = min(MAX_RENEW_INTERVAL, max(MIN_RENEW_INTERVAL, left / 2))
        if time.monotonic() + interval >= deadline:
            return  # the renewal limit (SHEAF_LOCK_RENEWAL_SECONDS) is reached: let it lapse
        await asyncio.sleep(interval)
        try:
            await receiver.renew_message_lock(message)
        except (ServiceBusError, ValueError) as exc:  # ValueError: receiver or message closed
            log.warning(
                "message lock renewal failed; the document carries on under its SQL lease",
                extra={"message_id": message.message_id, "error": str(exc)},
            )
            return
        metrics.SERVICEBUS_LOCK_RENEWALS.inc()


def _lock_left(message: ServiceBusReceivedMessage) -> float:
    locked_until = message.locked_until_utc
    if locked_until is None:
        return 0.0
    return (locked_until - datetime.now(UTC)).total_seconds()


class Settlement:
    """Settles one message; a lost lock is logged, never raised (the row is the truth)."""

    def __init__(self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
        self.receiver = receiver
        self.message = message

    async def complete(self) -> None:
        await self._settle("completed", lambda: self.receiver.complete_message(self.message))

    async def abandon(self) -> None:
        await self._settle("abandoned", lambda: self.receiver.abandon_message(self.message))

    async def dead_letter(self, reason: str, description: str) -> None:
        await self._settle(
            "dead_lettered",
            lambda: self.receiver.dead_letter_message(
                self.message, reason=reason, error_description=description[:4000]
            ),
        )

    async def _settle(self, how: str, call: Callable[[], object]) -> None:
        try:
            await call()  # type: ignore[misc]
        except (ServiceBusError, ValueError) as exc:  # ValueError: receiver shut down
            log.warning(
                "message settlement failed; its redelivery will be a no-op",
                extra={"message_id": self.message.message_id, "settlement": how, "error": str(exc)},
            )
            return
        metrics.SERVICEBUS_SETTLED.labels(settlement=how).inc()


def _error(exc: TransientError) -> dict[str, object]:
    return {"error": exc.message}


def _description(document: Document) -> str:
    return (
        f"{document.filename} in {document.collection} failed after {document.attempts} of "
        f"{document.max_attempts} attempts: {document.last_error} (document {document.id}). "
        f"Fix the cause, then `sheaf dlq resubmit` or `sheaf failed retry {document.id}`."
    )
