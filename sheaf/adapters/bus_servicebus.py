"""Azure Service Bus as Sheaf's `MessageBus` (the producer side), over `azure.servicebus.aio`.

Sending is best effort by design: callers treat a failure as "the reconciler will re-send",
so every SDK error becomes `TransientError("servicebus_unavailable")`. The sender link is
opened once and re-opened after a failure. Dispatches whose `not_before` lies in the future
are scheduled for that time instead of sent now.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import ServiceBusError

from sheaf.domain.messages import CONTENT_TYPE, encode, message_id, when
from sheaf.domain.models import Dispatch
from sheaf.errors import TransientError

REQUIRED_ROLE = "Azure Service Bus Data Owner (or Data Sender + Data Receiver)"


class ServiceBusMessageBus:
    enabled = True

    def __init__(self, client: ServiceBusClient, queue: str) -> None:
        self.client = client
        self.queue = queue
        self._sender: ServiceBusSender | None = None
        self._lock = asyncio.Lock()

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
        now = datetime.now(UTC)
        async with self._lock:
            try:
                sender = await self._open_sender()
                immediate = [_message(d) for d in dispatches if when(d, now) is None]
                if immediate:
                    await sender.send_messages(immediate)
                for dispatch in dispatches:
                    if (at := when(dispatch, now)) is not None:
                        await sender.schedule_messages(_message(dispatch), at)
            except ServiceBusError as exc:
                await self._drop_sender()
                raise TransientError(
                    f"Service Bus queue {self.queue!r} is unreachable ({exc}); the reconciler "
                    "re-sends once it is back, and workers poll meanwhile",
                    code="servicebus_unavailable",
                ) from exc

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
            with contextlib.suppress(ServiceBusError):  # thrown away because it failed
                await sender.close()


def _message(dispatch: Dispatch) -> ServiceBusMessage:
    return ServiceBusMessage(
        encode(dispatch),
        message_id=message_id(dispatch),
        content_type=CONTENT_TYPE,
        application_properties={"collection": dispatch.collection},
    )
