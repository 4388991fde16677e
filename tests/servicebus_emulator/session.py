"""An AMQP session: the links attached on it, transfer numbering, and peek-lock settlement.

Attach decides what a link is for from its address: `$cbs` and `<entity>/$management` get
request/reply links, a queue or `<queue>/$DeadLetterQueue` gets a delivery link (client
receives) or a send link (client sends). Unsettled peek-lock deliveries are remembered per
session, by delivery id, until the client settles them; the outcome is applied to the broker
and echoed back, because the SDK waits for that echo.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .broker import DEAD_LETTER_SUFFIX, BrokerError
from .frames import (
    Accepted,
    Attach,
    Begin,
    Composite,
    Detach,
    Disposition,
    Error,
    Flow,
    Modified,
    Rejected,
    Released,
    Target,
    Transfer,
)
from .links import (
    MAX_MESSAGE_SIZE,
    DeliveryLink,
    InboundLink,
    Link,
    OutboundLink,
    ReplyLink,
    link_properties,
)
from .management import handle_cbs, handle_management
from .message import Message

if TYPE_CHECKING:
    from .server import Connection

SESSION_WINDOW = 65536
MANAGEMENT_SUFFIX = "/$management"
CBS_NODE = "$cbs"


def entity_path(address: str | None) -> str:
    """`amqps://host:port/queue/$DeadLetterQueue` → `queue/$DeadLetterQueue`."""
    if not address:
        return ""
    if "://" in address:
        return urlparse(address).path.lstrip("/")
    return address.lstrip("/")


class ProtocolViolation(Exception):
    """The client broke the AMQP protocol in a way the emulator will not guess around."""


class Session:
    """One session: links by handle, transfer numbering, and unsettled peek-lock deliveries."""

    def __init__(self, connection: Connection, channel: int, begin: Begin) -> None:
        self.connection = connection
        self.channel = channel
        self.next_outgoing_id = 1
        self.next_incoming_id = begin.next_outgoing_id
        self.remote_incoming_window = begin.incoming_window
        self._incoming_since_flow = 0
        self._links: dict[int, Link] = {}  # by the client's handle
        # delivery id -> (entity address, lock token) of unsettled peek-lock deliveries
        self._unsettled: dict[int, tuple[str, uuid.UUID]] = {}

    # ------------------------------------------------------------------ outgoing

    def send(self, body: Composite, payload: bytes = b"") -> None:
        self.connection.send(self.channel, body, payload)

    def can_send(self) -> bool:
        return self.remote_incoming_window > 0 and not self.connection.closed

    def send_flow(self, link: Link | None = None, **link_state: Any) -> None:
        self._incoming_since_flow = 0
        self.send(
            Flow(
                next_incoming_id=self.next_incoming_id,
                incoming_window=SESSION_WINDOW,
                next_outgoing_id=self.next_outgoing_id,
                outgoing_window=SESSION_WINDOW,
                handle=link.handle if link else None,
                **link_state,
            )
        )

    def send_transfer(self, link: Link, tag: bytes, payload: bytes, settled: bool) -> int:
        """Send one delivery, split into frames the client accepts; return its id."""
        delivery_id = self.next_outgoing_id
        self.next_outgoing_id += 1
        self.remote_incoming_window -= 1
        room = self.connection.remote_max_frame_size - 128
        chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
        for index, chunk in enumerate(chunks):
            first = index == 0
            self.send(
                Transfer(
                    handle=link.handle,
                    delivery_id=delivery_id if first else None,
                    delivery_tag=tag if first else None,
                    message_format=0 if first else None,
                    settled=settled if first else None,
                    more=index < len(chunks) - 1,
                ),
                chunk,
            )
        return delivery_id

    def send_disposition(self, delivery_id: int, state: Composite, role_receiver: bool) -> None:
        self.send(Disposition(role=role_receiver, first=delivery_id, settled=True, state=state))

    def track(self, delivery_id: int, address: str, token: uuid.UUID) -> None:
        self._unsettled[delivery_id] = (address, token)

    # ------------------------------------------------------------------ incoming

    def handle(self, body: Composite, payload: bytes) -> None:
        if isinstance(body, Attach):
            self._on_attach(body)
        elif isinstance(body, Flow):
            self._on_flow(body)
        elif isinstance(body, Transfer):
            self._on_transfer(body, payload)
        elif isinstance(body, Disposition):
            self._on_disposition(body)
        elif isinstance(body, Detach):
            self._on_detach(body)

    def _on_transfer(self, transfer: Transfer, payload: bytes) -> None:
        if transfer.delivery_id is not None:
            self.next_incoming_id = transfer.delivery_id + 1
        self._incoming_since_flow += 1
        link = self._links.get(transfer.handle)
        if not isinstance(link, InboundLink):
            raise ProtocolViolation(f"transfer on unattached handle {transfer.handle}")
        link.on_transfer(transfer, payload)
        if self._incoming_since_flow > SESSION_WINDOW // 2:
            self.send_flow()

    def _on_flow(self, flow: Flow) -> None:
        next_incoming = flow.next_incoming_id if flow.next_incoming_id is not None else 1
        self.remote_incoming_window = next_incoming + flow.incoming_window - self.next_outgoing_id
        link = self._links.get(flow.handle) if flow.handle is not None else None
        if isinstance(link, OutboundLink):
            link.on_flow(flow)
        elif flow.handle is None:
            self.connection.server.wake()
        if flow.echo and link is None:
            self.send_flow()

    def _on_detach(self, detach: Detach) -> None:
        link = self._links.pop(detach.handle, None)
        if link is None:
            return
        link.attached = False
        self.connection.server.unregister(link)
        self.send(Detach(handle=link.handle, closed=True))

    def detach_all(self) -> None:
        for link in self._links.values():
            link.attached = False
            self.connection.server.unregister(link)
        self._links.clear()

    # ------------------------------------------------------------------ attach

    def _on_attach(self, attach: Attach) -> None:
        handle = next(n for n in range(256) if n not in {k.handle for k in self._links.values()})
        client_is_receiver = bool(attach.role)
        terminus = attach.source if client_is_receiver else attach.target
        address = entity_path(terminus.address if terminus else None)
        try:
            link = self._make_link(attach, handle, address, client_is_receiver)
        except BrokerError as exc:
            self._refuse(attach, handle, client_is_receiver, Error(exc.condition, str(exc)))
            return
        self._links[attach.handle] = link
        self.send(
            Attach(
                name=attach.name,
                handle=handle,
                role=not client_is_receiver,
                snd_settle_mode=attach.snd_settle_mode,
                rcv_settle_mode=attach.rcv_settle_mode,
                source=attach.source,
                target=attach.target or Target(address=attach.name),
                initial_delivery_count=0 if client_is_receiver else None,
                max_message_size=MAX_MESSAGE_SIZE,
                properties=link_properties() if not client_is_receiver else None,
            )
        )
        if isinstance(link, InboundLink):
            link.grant_credit()
        elif isinstance(link, DeliveryLink):
            self.connection.server.register(link)

    def _make_link(self, attach: Attach, handle: int, address: str, outbound: bool) -> Link:
        server = self.connection.server
        if address == CBS_NODE or address.endswith(MANAGEMENT_SUFFIX):
            if outbound:
                return ReplyLink(self, attach, handle, address)
            return InboundLink(self, attach, handle, address, self._responder(address))
        server.broker.entity(address)  # raises EntityNotFound
        if outbound:
            return DeliveryLink(self, attach, handle, address)
        if address.endswith(DEAD_LETTER_SUFFIX):
            raise BrokerError(f"Cannot send to the dead-letter queue '{address}'.")
        return InboundLink(self, attach, handle, address, self._sender_to(address))

    def _refuse(self, attach: Attach, handle: int, outbound: bool, error: Error) -> None:
        """Attach with a null terminus, then detach with the error (how Service Bus refuses)."""
        self.send(
            Attach(
                name=attach.name,
                handle=handle,
                role=not outbound,
                source=None if outbound else attach.source,
                target=attach.target if outbound else None,
                initial_delivery_count=0 if outbound else None,
            )
        )
        self.send(Detach(handle=handle, closed=True, error=error))

    def _sender_to(self, address: str) -> Any:
        server = self.connection.server

        def send(message: Message) -> Composite:
            server.broker.send(address, message)
            server.wake()
            return Accepted()

        return send

    def _responder(self, node: str) -> Any:
        server = self.connection.server

        def respond(request: Message) -> Composite:
            if node == CBS_NODE:
                reply = handle_cbs(request)
            else:
                entity = node.removesuffix(MANAGEMENT_SUFFIX)
                reply = handle_management(server.broker, entity, request)
                server.wake()
            self._reply_link(node, request).reply(reply)
            return Accepted()

        return respond

    def _reply_link(self, node: str, request: Message) -> ReplyLink:
        candidates = [
            link
            for link in self._links.values()
            if isinstance(link, ReplyLink) and link.address == node
        ]
        reply_to = request.prop("reply_to")
        for link in candidates:
            if reply_to is not None and link.target == reply_to:
                return link
        if not candidates:
            raise BrokerError(f"No reply link attached to {node}.")
        return candidates[0]

    # ------------------------------------------------------------------ settlement

    def _on_disposition(self, disposition: Disposition) -> None:
        if not disposition.role:
            return  # the client settling our acceptance of its sends: nothing to do
        last = disposition.last if disposition.last is not None else disposition.first
        for delivery_id in range(disposition.first, last + 1):
            echo = self._settle(delivery_id, disposition.state)
            if echo is not None and not disposition.settled:
                self.send_disposition(delivery_id, echo, role_receiver=False)
        self.connection.server.wake()

    def _settle(self, delivery_id: int, state: Any) -> Composite | None:
        """Apply the client's outcome to the broker; return the outcome to echo."""
        entry = self._unsettled.pop(delivery_id, None)
        if entry is None:
            return _lock_lost()
        address, token = entry
        broker = self.connection.server.broker
        try:
            if isinstance(state, Accepted):
                broker.complete(address, token)
            elif isinstance(state, Released):
                broker.release(address, token)
            elif isinstance(state, Modified) and state.undeliverable_here:
                broker.defer(address, token)
            elif isinstance(state, Modified) and state.delivery_failed:
                broker.abandon(address, token)
            elif isinstance(state, Modified):
                broker.release(address, token)
            elif isinstance(state, Rejected):
                reason, description = _dead_letter_details(state)
                broker.dead_letter(address, token, reason, description)
                return Rejected()
            else:
                self._unsettled[delivery_id] = entry  # not an outcome: still unsettled
                return None
        except BrokerError as exc:
            return Rejected(Error(exc.condition, str(exc)))
        return state  # type: ignore[no-any-return]


def _lock_lost() -> Rejected:
    return Rejected(
        Error(
            "com.microsoft:message-lock-lost",
            "The lock supplied is invalid. Either the lock expired, or the message has "
            "already been removed from the queue.",
        )
    )


def _dead_letter_details(state: Rejected) -> tuple[str | None, str | None]:
    error = state.error
    if error is None:
        return None, None
    info = error.info or {}
    reason = info.get("DeadLetterReason")
    description = info.get("DeadLetterErrorDescription", error.description)
    return (
        str(reason) if reason is not None else None,
        str(description) if description is not None else None,
    )
