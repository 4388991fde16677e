"""Azure Service Bus as Sheaf's `WorkQueue`, over `azure.servicebus.aio`.

Sending is best effort by design: callers treat a failure as "the reconciler will re-send",
so every SDK error becomes `TransientError("servicebus_unavailable")`. The sender link is
opened once and re-opened after a failure. Dispatches whose `not_before` lies in the future
are scheduled for that time instead of sent now.

A send is bounded (`SEND_TIMEOUT`), and after a failure sends fail fast for a cool-down
that doubles up to 10 s: an upload must not wait for the SDK's connection retries
while Service Bus is down, since its message would only be re-sent later anyway.

Receiving (`deliveries`) hands out SDK-free `Delivery` values whose message lock this module
keeps renewed until they are settled (`keep_locked`); settling a delivery whose lock is lost
returns False instead of raising, because the row, not the message, is the truth.

The dead-letter tooling (`sheaf.services.dlq`) reads the `$DeadLetterQueue` sub-queue through
`peek_dead_letters` and settles chosen messages through `take_dead_letters`; both hand back
SDK-free `DeadLetter` values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import ServiceBusError

from sheaf import metrics
from sheaf.domain.messages import CONTENT_TYPE, MalformedMessage, decode, encode, message_id, when
from sheaf.domain.models import Dispatch
from sheaf.errors import QueueUnavailable
from sheaf.ports import DeadLetter, Delivery

log = logging.getLogger(__name__)

REQUIRED_ROLE = "Azure Service Bus Data Owner (or Data Sender + Data Receiver)"

PEEK_PAGE = 100  # messages per peek or receive request
SEND_TIMEOUT = 5.0  # seconds one send (or schedule) may take before it counts as failed
COOL_DOWN = 2.0  # seconds sends fail fast after a failure; doubles per failure ...
MAX_COOL_DOWN = 10.0  # ... up to this: a send lost meanwhile waits for the reconciler
DLQ_LATER = "try again once it is back (messages not settled yet stay in the dead-letter queue)"


class ServiceBusMessageBus:
    enabled = True

    def __init__(self, client: ServiceBusClient, queue: str) -> None:
        self.client = client
        self.queue = queue
        self._sender: ServiceBusSender | None = None
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0  # time.monotonic() before which sends fail fast

    @classmethod
    def from_connection_string(cls, connection_string: str, queue: str) -> ServiceBusMessageBus:
        return cls(ServiceBusClient.from_connection_string(connection_string), queue)

    @classmethod
    def from_namespace(
        cls, namespace: str, credential: AsyncTokenCredential, queue: str
    ) -> ServiceBusMessageBus:
        """`namespace` is the fully qualified name, e.g. `sheaf.servicebus.windows.net`."""
        return cls(ServiceBusClient(namespace, credential), queue)

    async def send(self, dispatches: Sequence[Dispatch]) -> None:
        if not dispatches:
            return
        later = "the reconciler re-sends once it is back, and workers poll meanwhile"
        if time.monotonic() < self._retry_at:
            raise QueueUnavailable(
                f"Service Bus queue {self.queue!r} was unreachable moments ago; not tried "
                f"again yet ({later})"
            )
        async with self._lock:
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self._send(dispatches)
            except (ServiceBusError, TimeoutError) as exc:
                await self._drop_sender()
                self._failures += 1
                cool_down = min(MAX_COOL_DOWN, COOL_DOWN * 2 ** (self._failures - 1))
                self._retry_at = time.monotonic() + cool_down
                raise _unreachable(self.queue, exc, later) from exc
            self._failures = 0

    async def _send(self, dispatches: Sequence[Dispatch]) -> None:
        now = datetime.now(UTC)
        sender = await self._open_sender()
        immediate = [_message(d) for d in dispatches if when(d, now) is None]
        if immediate:
            await sender.send_messages(immediate)
        for dispatch in dispatches:
            if (at := when(dispatch, now)) is not None:
                await sender.schedule_messages(_message(dispatch), at)

    @contextlib.asynccontextmanager
    async def deliveries(
        self, prefetch: int, lock_renewal_seconds: float
    ) -> AsyncIterator[_Receiver]:
        """A peek-lock receiver; `QueueUnavailable` when the link cannot be opened or breaks."""
        try:
            async with self.receiver(prefetch) as receiver:
                yield _Receiver(self.queue, receiver, lock_renewal_seconds)
        except ServiceBusError as exc:
            raise _unreachable(self.queue, exc, "workers poll the database meanwhile") from exc

    def receiver(self, prefetch: int) -> ServiceBusReceiver:
        """A peek-lock receiver of the queue; the caller opens and closes it."""
        return self.client.get_queue_receiver(
            self.queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=prefetch
        )

    def dead_letter_receiver(self) -> ServiceBusReceiver:
        return self.client.get_queue_receiver(
            self.queue,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
        )

    async def waiting(self, limit: int) -> set[str] | None:
        try:
            async with self.receiver(prefetch=0) as receiver:
                messages = await _peek(receiver, limit + 1, 0)
        except ServiceBusError as exc:
            raise _unreachable(self.queue, exc, "the reconciler re-sends as before") from exc
        if len(messages) > limit:
            return None
        ids = set()
        for message in messages:
            with contextlib.suppress(MalformedMessage):
                ids.add(decode(b"".join(message.body)).document_id)
        return ids

    async def peek_dead_letters(
        self, limit: int, from_sequence_number: int = 0
    ) -> list[DeadLetter]:
        """Up to `limit` dead-lettered messages in sequence order, without locking any."""
        try:
            async with self.dead_letter_receiver() as receiver:
                found = await _peek(receiver, limit, from_sequence_number)
        except ServiceBusError as exc:
            raise _unreachable(self.queue, exc, DLQ_LATER) from exc
        return [_dead_letter(m) for m in found]

    async def take_dead_letters(
        self,
        handle: Callable[[DeadLetter], Awaitable[bool]],
        *,
        enough: Callable[[], bool],
        limit: int,
        max_wait: float = 1.0,
    ) -> None:
        """Receive dead-lettered messages in peek-lock and let `handle` decide each one.

        `handle` returning True completes the message (it leaves the DLQ); False keeps it
        locked until the pass ends, so the same pass does not receive it again, and then
        abandons it (back in the DLQ, delivery count + 1). The pass ends when `enough()`,
        after `limit` messages, or when the sub-queue has nothing more to give. If `handle`
        raises, the messages still locked go back when their locks expire: nothing is lost.
        """
        kept: list[ServiceBusReceivedMessage] = []
        seen: set[int] = set()
        try:
            async with self.dead_letter_receiver() as receiver:
                try:
                    while not enough() and len(seen) < limit:
                        batch = await receiver.receive_messages(
                            max_message_count=min(PEEK_PAGE, limit - len(seen)),
                            max_wait_time=max_wait,
                        )
                        fresh = [m for m in batch if m.sequence_number not in seen]
                        if not fresh:
                            kept.extend(batch)
                            break
                        for message in fresh:
                            seen.add(message.sequence_number or 0)
                            if not enough() and await handle(_dead_letter(message)):
                                await receiver.complete_message(message)
                            else:
                                kept.append(message)
                finally:
                    for message in kept:
                        with contextlib.suppress(ServiceBusError):  # its lock expires anyway
                            await receiver.abandon_message(message)
        except ServiceBusError as exc:
            raise _unreachable(self.queue, exc, DLQ_LATER) from exc

    async def close(self) -> None:
        async with self._lock:
            await self._drop_sender()
        await self.client.close()

    async def _open_sender(self) -> ServiceBusSender:
        if self._sender is None:
            sender = self.client.get_queue_sender(self.queue)
            await sender.__aenter__()
            self._sender = sender
        return self._sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            # Thrown away because it failed: do not wait long for a dead link to close.
            with contextlib.suppress(ServiceBusError, TimeoutError):
                async with asyncio.timeout(SEND_TIMEOUT):
                    await sender.close()


async def _peek(
    receiver: ServiceBusReceiver, limit: int, from_sequence_number: int
) -> list[ServiceBusReceivedMessage]:
    """Up to `limit` messages in sequence order from `from_sequence_number`, locking none."""
    found: list[ServiceBusReceivedMessage] = []
    while len(found) < limit:
        page = await receiver.peek_messages(
            max_message_count=min(PEEK_PAGE, limit - len(found)),
            sequence_number=from_sequence_number,
        )
        if not page:
            break
        found.extend(page)
        from_sequence_number = (found[-1].sequence_number or 0) + 1
    return found


def _message(dispatch: Dispatch) -> ServiceBusMessage:
    return ServiceBusMessage(
        encode(dispatch),
        message_id=message_id(dispatch),
        content_type=CONTENT_TYPE,
        application_properties={"collection": dispatch.collection},
    )


def _dead_letter(message: ServiceBusReceivedMessage) -> DeadLetter:
    return DeadLetter(
        sequence_number=message.sequence_number or 0,
        message_id=str(message.message_id),
        reason=message.dead_letter_reason,
        description=message.dead_letter_error_description,
        delivery_count=message.delivery_count or 0,
        enqueued_at=message.enqueued_time_utc,
        body=b"".join(message.body),
    )


def _unreachable(queue: str, exc: ServiceBusError | TimeoutError, then: str) -> QueueUnavailable:
    detail = str(exc) or f"no answer within {SEND_TIMEOUT:g} s"
    return QueueUnavailable(f"Service Bus queue {queue!r} is unreachable ({detail}); {then}")


class _Receiver:
    """`Receiver` over one open SDK receiver; every delivery starts its own lock renewal."""

    def __init__(self, queue: str, receiver: ServiceBusReceiver, renew_for: float) -> None:
        self.queue = queue
        self.receiver = receiver
        self.renew_for = renew_for

    async def receive(self, max_count: int, max_wait: float) -> list[Delivery]:
        try:
            messages = await self.receiver.receive_messages(
                max_message_count=max_count, max_wait_time=max_wait
            )
        except ServiceBusError as exc:
            raise _unreachable(self.queue, exc, "workers poll the database meanwhile") from exc
        return [_Delivery(self.receiver, message, self.renew_for) for message in messages]


class _Delivery:
    """One peek-locked message; its lock is renewed in the background until it is settled."""

    def __init__(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, renew_for: float
    ) -> None:
        self.receiver = receiver
        self.message = message
        self.message_id = str(message.message_id)
        self.body = b"".join(message.body)
        self.delivery_count = message.delivery_count or 0
        self._renewal = asyncio.create_task(
            keep_locked(receiver, message, renew_for), name=f"lock-{self.message_id}"
        )

    async def complete(self) -> bool:
        return await self._settle("completed", self.receiver.complete_message(self.message))

    async def abandon(self) -> bool:
        return await self._settle("abandoned", self.receiver.abandon_message(self.message))

    async def dead_letter(self, reason: str, description: str) -> bool:
        call = self.receiver.dead_letter_message(
            self.message, reason=reason, error_description=description[:4000]
        )
        return await self._settle("dead_lettered", call)

    async def renew(self) -> bool:
        try:
            await self.receiver.renew_message_lock(self.message)
        except (ServiceBusError, ValueError):
            return False
        return True

    async def _settle(self, how: str, call: Awaitable[None]) -> bool:
        self._renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewal
        try:
            await call
        except (ServiceBusError, ValueError) as exc:  # ValueError: receiver shut down
            log.warning(
                "message settlement failed; its redelivery will be a no-op",
                extra={"message_id": self.message_id, "settlement": how, "error": str(exc)},
            )
            return False
        metrics.SERVICEBUS_SETTLED.labels(settlement=how).inc()
        return True


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
