"""Request/response nodes: `$cbs` (token exchange) and `<entity>/$management`.

Each handler takes the request message and returns the reply message; the link layer
routes it back to the requester's reply link. Replies follow Service Bus: integer
`statusCode`, `statusDescription`, `errorCondition` on failure, `correlation_id` set to the
request's `message_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .broker import Broker, BrokerError, StoredMessage
from .codec import Array, Int, Long, Symbol, Timestamp
from .frames import timestamp_ms
from .message import Message

VENDOR = "com.microsoft:"
Handler = Callable[[Broker, str, Mapping[str, Any]], tuple[int, Any]]


class BadRequest(Exception):
    """A management request the emulator cannot parse or does not implement."""

    def __init__(self, status: int, condition: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.condition = condition


def handle_cbs(request: Message) -> Message:
    """Accept any token: the emulator authenticates nobody."""
    return Message.build(
        properties={"correlation_id": request.prop("message_id")},
        application_properties={"status-code": Int(202), "status-description": "Accepted"},
    )


def handle_management(broker: Broker, entity: str, request: Message) -> Message:
    """Run one management operation against `entity` (a queue or its dead-letter queue)."""
    operation = str(request.application_properties.get("operation", ""))
    handler = _OPERATIONS.get(operation.removeprefix(VENDOR))
    try:
        if handler is None:
            raise BadRequest(501, "amqp:not-implemented", f"Unsupported operation {operation}")
        body = request.body if isinstance(request.body, Mapping) else {}
        status, value = handler(broker, entity, body)
    except BrokerError as exc:
        return _reply(request, _status_of(exc), str(exc), None, exc.condition)
    except BadRequest as exc:
        return _reply(request, exc.status, str(exc), None, exc.condition)
    return _reply(request, status, "OK" if status == 200 else "No Content", value)


def _reply(
    request: Message, status: int, description: str, value: Any, condition: str | None = None
) -> Message:
    properties: dict[str, Any] = {"statusCode": Int(status), "statusDescription": description}
    if condition is not None:
        properties["errorCondition"] = Symbol(condition)
    return Message.build(
        properties={"correlation_id": request.prop("message_id")},
        application_properties=properties,
        value=value,
    )


def _status_of(error: BrokerError) -> int:
    return {"com.microsoft:message-lock-lost": 410, "amqp:not-found": 404}.get(
        error.condition, 404 if error.condition.endswith("not-found") else 500
    )


def _items(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        raise BadRequest(400, VENDOR + "argument-error", f"missing {key}")
    return list(value.items if isinstance(value, Array) else value)


def _encoded(stored: StoredMessage) -> bytes:
    return stored.render().encode()


# ------------------------------------------------------------------------ operations


def _renew_lock(broker: Broker, entity: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    broker.count_renew_call(entity)
    tokens = [_as_uuid(token) for token in _items(body, "lock-tokens")]
    expirations = [timestamp_ms(broker.renew_lock(entity, token)) for token in tokens]
    return 200, {"expirations": Array(tuple(expirations), element=Timestamp)}


def _peek(broker: Broker, entity: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    start = int(body.get("from-sequence-number") or 0)
    count = int(body.get("message-count") or 1)
    found = broker.peek(entity, start, count)
    if not found:
        return 204, None
    return 200, {"messages": [{"message": _encoded(stored)} for stored in found]}


def _schedule(broker: Broker, entity: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    numbers = []
    for item in _items(body, "messages"):
        message = Message.decode(bytes(item["message"]))
        at = message.message_annotations.get(Symbol("x-opt-scheduled-enqueue-time"))
        if not isinstance(at, int):
            raise BadRequest(400, VENDOR + "argument-error", "no x-opt-scheduled-enqueue-time")
        numbers.append(Long(broker.schedule(entity, message, at / 1000)))
    return 200, {"sequence-numbers": Array(tuple(numbers), element=Long)}


def _cancel_scheduled(broker: Broker, entity: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    for number in _items(body, "sequence-numbers"):
        broker.cancel_scheduled(entity, int(number))
    return 200, {}


def _update_disposition(broker: Broker, entity: str, body: Mapping[str, Any]) -> tuple[int, Any]:
    status = str(body.get("disposition-status", ""))
    for token in map(_as_uuid, _items(body, "lock-tokens")):
        if status == "completed":
            broker.complete(entity, token)
        elif status == "abandoned":
            broker.abandon(entity, token)
        elif status == "defered":
            broker.defer(entity, token)
        elif status == "suspended":
            reason = body.get("deadletter-reason")
            description = body.get("deadletter-description")
            broker.dead_letter(entity, token, reason, description)
        else:
            raise BadRequest(400, VENDOR + "argument-error", f"unknown status {status!r}")
    return 200, {}


def _receive_by_sequence_number(
    broker: Broker, entity: str, body: Mapping[str, Any]
) -> tuple[int, Any]:
    numbers = [int(number) for number in _items(body, "sequence-numbers")]
    peek_lock = int(body.get("receiver-settle-mode") or 0) == 1
    found = broker.receive_deferred(entity, numbers, lock=peek_lock)
    messages = []
    for stored in found:
        item: dict[str, Any] = {"message": stored.render(lock_token_annotation=True).encode()}
        if stored.lock_token is not None:
            item["lock-token"] = stored.lock_token
        messages.append(item)
    return 200, {"messages": messages}


def _as_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes) and len(value) == 16:
        return uuid.UUID(bytes=value)
    return uuid.UUID(str(value))


_OPERATIONS: dict[str, Handler] = {
    "renew-lock": _renew_lock,
    "peek-message": _peek,
    "schedule-message": _schedule,
    "cancel-scheduled-message": _cancel_scheduled,
    "update-disposition": _update_disposition,
    "receive-by-sequence-number": _receive_by_sequence_number,
}
