"""Links: what flows over one attached link, in either direction.

Naming follows the emulator's side: an `InboundLink` carries transfers from the client
(sends to a queue, requests to `$cbs`/`$management`); an `OutboundLink` carries transfers
to the client (queue deliveries, replies). Flow control is per the AMQP spec: an outbound
link sends only while it holds credit (`delivery-count + link-credit` from the client's
last flow, minus what was sent since), and a drain request uses up the remaining credit
when nothing is left to send.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .broker import BrokerError
from .frames import Accepted, Attach, Composite, Error, Flow, Rejected, Transfer
from .message import BATCH_MESSAGE_FORMAT, Message, split_batch

if TYPE_CHECKING:
    from .session import Session

INBOUND_CREDIT = 1000
# Service Bus standard tier; the SDK sizes batches by it.
MAX_MESSAGE_SIZE = 256 * 1024


class Link:
    def __init__(self, session: Session, attach: Attach, handle: int, address: str) -> None:
        self.session = session
        self.name = attach.name
        self.handle = handle
        self.remote_handle = attach.handle
        self.address = address
        self.attached = True


class InboundLink(Link):
    """The client sends on this link; each complete delivery goes to `on_message`."""

    def __init__(
        self,
        session: Session,
        attach: Attach,
        handle: int,
        address: str,
        on_message: Callable[[Message], Composite],
    ) -> None:
        super().__init__(session, attach, handle, address)
        self.on_message = on_message
        self.delivery_count = attach.initial_delivery_count or 0
        self.credit = 0
        self._first: Transfer | None = None
        self._payload = bytearray()

    def grant_credit(self) -> None:
        self.credit = INBOUND_CREDIT
        self.session.send_flow(self, delivery_count=self.delivery_count, link_credit=self.credit)

    def on_transfer(self, transfer: Transfer, payload: bytes) -> None:
        if self._first is None:
            self._first = transfer
            self.delivery_count += 1
            self.credit -= 1
        self._payload += payload
        if transfer.aborted:
            self._first, self._payload = None, bytearray()
            return
        if transfer.more:
            return
        first, data = self._first, bytes(self._payload)
        self._first, self._payload = None, bytearray()
        outcome = self._accept(first.message_format or 0, data)
        if not first.settled and first.delivery_id is not None:
            self.session.send_disposition(first.delivery_id, outcome, role_receiver=True)
        if self.credit < INBOUND_CREDIT // 2:
            self.grant_credit()

    def _accept(self, message_format: int, data: bytes) -> Composite:
        try:
            if message_format == BATCH_MESSAGE_FORMAT:
                outcomes = [self.on_message(message) for message in split_batch(data)]
                return next((o for o in outcomes if not isinstance(o, Accepted)), Accepted())
            return self.on_message(Message.decode(data))
        except BrokerError as exc:
            return Rejected(Error(exc.condition, str(exc)))
        except ValueError as exc:
            return Rejected(Error("amqp:decode-error", str(exc)))


class OutboundLink(Link):
    """The emulator sends on this link, within the credit the client grants."""

    def __init__(self, session: Session, attach: Attach, handle: int, address: str) -> None:
        super().__init__(session, attach, handle, address)
        self.delivery_count = 0
        self.credit = 0
        self.drain = False

    def on_flow(self, flow: Flow) -> None:
        their_count = flow.delivery_count if flow.delivery_count is not None else 0
        self.credit = max(0, their_count + (flow.link_credit or 0) - self.delivery_count)
        self.drain = bool(flow.drain)
        self.flush()
        if self.drain and self.credit > 0:
            self.delivery_count += self.credit
            self.credit = 0
            self._send_state(drain=True)
        elif flow.echo:
            self._send_state(drain=self.drain)

    def _send_state(self, drain: bool) -> None:
        self.session.send_flow(
            self, delivery_count=self.delivery_count, link_credit=self.credit, drain=drain
        )

    def can_send(self) -> bool:
        return self.attached and self.credit > 0 and self.session.can_send()

    def sent_one(self) -> None:
        self.delivery_count += 1
        self.credit -= 1

    def pump(self) -> bool:
        """Send what this link may send now; True when something went out."""
        return False

    def flush(self) -> None:
        """Use the credit just granted."""
        self.pump()


class ReplyLink(OutboundLink):
    """Carries `$cbs` and `$management` replies, queued until the client grants credit."""

    def __init__(self, session: Session, attach: Attach, handle: int, address: str) -> None:
        super().__init__(session, attach, handle, address)
        self.target = attach.target.address if attach.target else None
        self._pending: deque[Message] = deque()

    def reply(self, message: Message) -> None:
        self._pending.append(message)
        self.pump()

    def pump(self) -> bool:
        sent = False
        while self._pending and self.can_send():
            tag = uuid.uuid4().bytes
            self.session.send_transfer(self, tag, self._pending.popleft().encode(), settled=True)
            self.sent_one()
            sent = True
        return sent


class DeliveryLink(OutboundLink):
    """Delivers a queue's (or dead-letter queue's) messages: peek-lock or receive-and-delete.

    A peek-lock delivery's tag is its lock token in the little-endian byte order .NET uses,
    which is what the SDK turns back into `lock_token`.
    """

    def __init__(self, session: Session, attach: Attach, handle: int, address: str) -> None:
        super().__init__(session, attach, handle, address)
        self.receive_and_delete = attach.snd_settle_mode == 1
        self.broker = session.connection.server.broker

    def flush(self) -> None:
        # Through the server, so concurrent receivers of one queue take turns.
        self.session.connection.server.dispatch()

    def pump(self) -> bool:
        """Deliver at most one message."""
        if not self.can_send():
            return False
        if self.receive_and_delete:
            stored = self.broker.take_next(self.address)
        else:
            stored = self.broker.lock_next(self.address)
        if stored is None:
            return False
        payload = stored.render().encode()
        if stored.lock_token is None:
            self.session.send_transfer(self, uuid.uuid4().bytes_le, payload, settled=True)
        else:
            delivery_id = self.session.send_transfer(
                self, stored.lock_token.bytes_le, payload, settled=False
            )
            self.session.track(delivery_id, self.address, stored.lock_token)
        self.sent_one()
        return True


def link_properties() -> dict[str, Any]:
    return {"com.microsoft:max-message-batch-size": MAX_MESSAGE_SIZE}
