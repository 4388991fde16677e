"""Service Bus queue semantics with no I/O: send, lock, settle, expire, dead-letter, schedule.

Everything takes the time from the injected `clock` (POSIX seconds), so a unit test can
drive lock expiry and scheduling without sleeping. The server calls `expire()` whenever
`next_deadline()` passes; every other method also applies expiries first, so a lock that
ran out is never honoured late.

Behaviour that mirrors Service Bus and that callers may rely on:
- `delivery_count` (the AMQP header) counts failed deliveries: abandon and lock expiry
  add one; a release (prefetched messages handed back) does not. When it reaches
  `max_delivery_count` the message moves to `<queue>/$DeadLetterQueue` with reason
  `MaxDeliveryCountExceeded`.
- Locks outlive the link and connection that took them; only expiry or settlement ends them.
- A message whose `message_id` was sent within `duplicate_detection_window` is accepted
  and dropped.

For tests to inspect: `renew_lock_calls` per queue, `completed` (per queue, each completed
message's id and the delivery count it had) and `dropped_duplicates` (ids dropped).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .codec import Long, Symbol
from .frames import timestamp_ms
from .message import Message

DEAD_LETTER_SUFFIX = "/$DeadLetterQueue"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"

Clock = Callable[[], float]


class BrokerError(Exception):
    """Root of the broker's refusals; `condition` is the AMQP error condition to report."""

    condition = "amqp:internal-error"


class EntityNotFound(BrokerError):
    condition = "amqp:not-found"


class LockLost(BrokerError):
    condition = "com.microsoft:message-lock-lost"


class MessageNotFound(BrokerError):
    condition = "com.microsoft:message-not-found"


@dataclass(frozen=True)
class QueueConfig:
    """One queue's settings; times in seconds. A window of None turns dedupe off."""

    name: str
    lock_duration: float = 30.0
    max_delivery_count: int = 10
    duplicate_detection_window: float | None = None

    @classmethod
    def parse(cls, spec: str) -> QueueConfig:
        """`name:key=value,...`, e.g. `documents:max_delivery_count=10,lock_duration=30`."""
        name, _, options = spec.partition(":")
        settings: dict[str, Any] = {}
        for option in filter(None, options.split(",")):
            key, _, raw = option.partition("=")
            key = key.strip()
            if key == "max_delivery_count":
                settings[key] = int(raw)
            elif key in ("lock_duration", "duplicate_detection_window"):
                settings[key] = float(raw)
            else:
                raise ValueError(f"unknown queue setting {key!r} in {spec!r}")
        return cls(name=name.strip(), **settings)


@dataclass(frozen=True, slots=True)
class Completed:
    """A message that was completed, and how many failed deliveries it had had."""

    message_id: str
    delivery_count: int


@dataclass
class StoredMessage:
    message: Message
    sequence_number: int
    enqueued_at: float
    visible_at: float
    delivery_count: int = 0
    lock_token: uuid.UUID | None = None
    locked_until: float | None = None
    deferred: bool = False
    scheduled: bool = False
    dead_letter_source: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None

    def render(self, lock_token_annotation: bool = False) -> Message:
        """The message as a receiver sees it: header and `x-opt-*` annotations filled in.

        With `lock_token_annotation` the lock token also travels as the delivery annotation
        `x-opt-lock-token`, which is where SDKs before 7.15 look for it on deferred messages.
        """
        annotations: dict[str, Any] = {
            "x-opt-sequence-number": Long(self.sequence_number),
            "x-opt-enqueued-time": timestamp_ms(self.enqueued_at),
        }
        if self.scheduled:
            annotations["x-opt-scheduled-enqueue-time"] = timestamp_ms(self.visible_at)
        if self.locked_until is not None:
            annotations["x-opt-locked-until"] = timestamp_ms(self.locked_until)
        if self.dead_letter_source is not None:
            annotations["x-opt-deadletter-source"] = self.dead_letter_source
        message = self.message.without_delivery_annotations()
        if lock_token_annotation and self.lock_token is not None:
            message = message.with_delivery_annotations({"x-opt-lock-token": self.lock_token})
        if self.dead_letter_reason is not None:
            message = message.with_application_properties(
                {
                    "DeadLetterReason": self.dead_letter_reason,
                    "DeadLetterErrorDescription": self.dead_letter_description or "",
                }
            )
        return message.with_delivery_state(self.delivery_count, annotations)


@dataclass
class Entity:
    """A queue or its dead-letter sub-queue: messages in sequence order, plus locks."""

    address: str
    config: QueueConfig
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    locks: dict[uuid.UUID, StoredMessage] = field(default_factory=dict)
    sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def available(self, now: float) -> Iterator[StoredMessage]:
        for stored in self.messages.values():
            if stored.lock_token is None and not stored.deferred and stored.visible_at <= now:
                yield stored


@dataclass
class Queue:
    config: QueueConfig
    active: Entity
    dead_letter: Entity
    seen_message_ids: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, config: QueueConfig) -> Queue:
        dlq_config = QueueConfig(
            config.name + DEAD_LETTER_SUFFIX, config.lock_duration, max_delivery_count=2**31
        )
        return cls(config, Entity(config.name, config), Entity(dlq_config.name, dlq_config))


class Broker:
    """All queues of one emulated namespace."""

    def __init__(self, queues: Iterable[QueueConfig] = (), clock: Clock = time.time) -> None:
        self.clock = clock
        self.queues: dict[str, Queue] = {}
        self.renew_lock_calls: Counter[str] = Counter()
        self.completed: dict[str, list[Completed]] = {}
        self.dropped_duplicates: dict[str, list[str]] = {}
        for config in queues:
            self.add_queue(config)

    def add_queue(self, config: QueueConfig) -> None:
        if config.name in self.queues:
            raise ValueError(f"queue {config.name!r} exists already")
        self.queues[config.name] = Queue.create(config)

    # ------------------------------------------------------------------ lookup

    def entity(self, address: str) -> Entity:
        """The queue (`name`) or dead-letter queue (`name/$DeadLetterQueue`) at `address`."""
        name, dead_letter = _split_address(address)
        queue = self.queues.get(name)
        if queue is None:
            raise EntityNotFound(f"The messaging entity '{address}' could not be found.")
        return queue.dead_letter if dead_letter else queue.active

    def _queue_of(self, entity: Entity) -> Queue:
        return self.queues[_split_address(entity.address)[0]]

    # ------------------------------------------------------------------ sending

    def send(self, address: str, message: Message) -> int | None:
        """Enqueue; return the sequence number, or None for a dropped duplicate."""
        entity = self.entity(address)
        now = self.clock()
        if self._is_duplicate(self._queue_of(entity), message, now):
            return None
        scheduled_at = _scheduled_time(message)
        return self._enqueue(entity, message, now, scheduled_at)

    def schedule(self, address: str, message: Message, at: float) -> int:
        """Enqueue invisibly until `at`; a duplicate still gets a (dead) sequence number."""
        entity = self.entity(address)
        now = self.clock()
        if self._is_duplicate(self._queue_of(entity), message, now):
            return next(entity.sequence)
        return self._enqueue(entity, message, now, at)

    def cancel_scheduled(self, address: str, sequence_number: int) -> None:
        entity = self.entity(address)
        stored = entity.messages.get(sequence_number)
        if stored is None or not stored.scheduled or stored.visible_at <= self.clock():
            raise MessageNotFound(f"No scheduled message with sequence number {sequence_number}.")
        del entity.messages[sequence_number]

    def _enqueue(
        self, entity: Entity, message: Message, now: float, scheduled_at: float | None
    ) -> int:
        sequence_number = next(entity.sequence)
        visible_at = max(now, scheduled_at or now)
        entity.messages[sequence_number] = StoredMessage(
            message=message,
            sequence_number=sequence_number,
            enqueued_at=visible_at,
            visible_at=visible_at,
            scheduled=scheduled_at is not None and scheduled_at > now,
        )
        return sequence_number

    def _is_duplicate(self, queue: Queue, message: Message, now: float) -> bool:
        window = queue.config.duplicate_detection_window
        message_id = message.prop("message_id")
        if window is None or message_id is None:
            return False
        key = repr(message_id)
        seen = queue.seen_message_ids
        for old in [k for k, at in seen.items() if at + window <= now]:
            del seen[old]
        if key in seen:
            self.dropped_duplicates.setdefault(queue.config.name, []).append(str(message_id))
            return True
        seen[key] = now
        return False

    # ------------------------------------------------------------------ receiving

    def lock_next(self, address: str) -> StoredMessage | None:
        """Peek-lock the next visible message (a new lock token), or None."""
        entity = self.entity(address)
        now = self.expire()
        stored = next(entity.available(now), None)
        if stored is not None:
            self._lock(entity, stored, now)
        return stored

    def take_next(self, address: str) -> StoredMessage | None:
        """Receive-and-delete the next visible message, or None."""
        entity = self.entity(address)
        now = self.expire()
        stored = next(entity.available(now), None)
        if stored is not None:
            del entity.messages[stored.sequence_number]
        return stored

    def has_available(self, address: str) -> bool:
        return next(self.entity(address).available(self.clock()), None) is not None

    def _lock(self, entity: Entity, stored: StoredMessage, now: float) -> None:
        stored.lock_token = uuid.uuid4()
        stored.locked_until = now + entity.config.lock_duration
        entity.locks[stored.lock_token] = stored

    # ------------------------------------------------------------------ settlement

    def complete(self, address: str, token: uuid.UUID) -> None:
        entity, stored = self._locked(address, token)
        self._unlock(entity, stored)
        del entity.messages[stored.sequence_number]
        message_id = str(stored.message.prop("message_id"))
        done = Completed(message_id, stored.delivery_count)
        self.completed.setdefault(entity.address, []).append(done)

    def abandon(self, address: str, token: uuid.UUID) -> None:
        entity, stored = self._locked(address, token)
        self._unlock(entity, stored)
        self._count_failed_delivery(entity, stored)

    def release(self, address: str, token: uuid.UUID) -> None:
        """Hand back unprocessed (prefetched) messages: unlocked, delivery count unchanged."""
        entity, stored = self._locked(address, token)
        self._unlock(entity, stored)

    def defer(self, address: str, token: uuid.UUID) -> None:
        entity, stored = self._locked(address, token)
        self._unlock(entity, stored)
        stored.deferred = True

    def dead_letter(
        self, address: str, token: uuid.UUID, reason: str | None, description: str | None
    ) -> None:
        entity, stored = self._locked(address, token)
        self._unlock(entity, stored)
        self._move_to_dead_letter(entity, stored, reason, description)

    def renew_lock(self, address: str, token: uuid.UUID) -> float:
        entity, stored = self._locked(address, token)
        stored.locked_until = self.clock() + entity.config.lock_duration
        return stored.locked_until

    def count_renew_call(self, address: str) -> None:
        self.renew_lock_calls[_split_address(address)[0]] += 1

    def _locked(self, address: str, token: uuid.UUID) -> tuple[Entity, StoredMessage]:
        entity = self.entity(address)
        self.expire()
        stored = entity.locks.get(token)
        if stored is None:
            raise LockLost(
                "The lock supplied is invalid. Either the lock expired, or the message "
                "has already been removed from the queue."
            )
        return entity, stored

    @staticmethod
    def _unlock(entity: Entity, stored: StoredMessage) -> None:
        if stored.lock_token is not None:
            entity.locks.pop(stored.lock_token, None)
        stored.lock_token = None
        stored.locked_until = None

    def _count_failed_delivery(self, entity: Entity, stored: StoredMessage) -> None:
        stored.delivery_count += 1
        if stored.delivery_count >= entity.config.max_delivery_count:
            self._move_to_dead_letter(
                entity,
                stored,
                MAX_DELIVERY_COUNT_EXCEEDED,
                f"Message could not be consumed after {stored.delivery_count} delivery attempts.",
            )

    def _move_to_dead_letter(
        self, entity: Entity, stored: StoredMessage, reason: str | None, description: str | None
    ) -> None:
        del entity.messages[stored.sequence_number]
        queue = self._queue_of(entity)
        if entity is queue.dead_letter:  # dead-lettering from the DLQ keeps it there
            entity.messages[stored.sequence_number] = stored
            return
        dlq = queue.dead_letter
        moved = StoredMessage(
            message=stored.message,
            sequence_number=next(dlq.sequence),
            enqueued_at=stored.enqueued_at,
            visible_at=stored.visible_at,
            delivery_count=stored.delivery_count,
            dead_letter_source=entity.address,
            dead_letter_reason=reason,
            dead_letter_description=description,
        )
        dlq.messages[moved.sequence_number] = moved

    # ------------------------------------------------------------------ time

    def expire(self) -> float:
        """Apply every lock expiry due by now; return now."""
        now = self.clock()
        for queue in self.queues.values():
            for entity in (queue.active, queue.dead_letter):
                expired = [s for s in entity.locks.values() if (s.locked_until or 0) <= now]
                for stored in expired:
                    self._unlock(entity, stored)
                    self._count_failed_delivery(entity, stored)
        return now

    def expire_locks(self, address: str) -> int:
        """End every lock on `address` now, as if its time were up; return how many.

        For tests: the service losing a lock the client still believes in (clock skew, a
        broker failover) is what makes settlement fail with `message-lock-lost`.
        """
        entity = self.entity(address)
        expired = list(entity.locks.values())
        for stored in expired:
            self._unlock(entity, stored)
            self._count_failed_delivery(entity, stored)
        return len(expired)

    def next_deadline(self) -> float | None:
        """The earliest future moment a lock expires or a scheduled message shows up."""
        now = self.clock()
        deadlines = [
            moment
            for queue in self.queues.values()
            for entity in (queue.active, queue.dead_letter)
            for moment in _deadlines(entity, now)
        ]
        return min(deadlines, default=None)

    # ------------------------------------------------------------------ browsing

    def peek(self, address: str, from_sequence_number: int, count: int) -> list[StoredMessage]:
        """Up to `count` messages from `from_sequence_number` on, locked or not; no lock taken."""
        entity = self.entity(address)
        self.expire()
        found = [s for s in entity.messages.values() if s.sequence_number >= from_sequence_number]
        return found[:count]

    def receive_deferred(
        self, address: str, sequence_numbers: Iterable[int], lock: bool
    ) -> list[StoredMessage]:
        entity = self.entity(address)
        now = self.expire()
        found = []
        for number in sequence_numbers:
            stored = entity.messages.get(number)
            if stored is None or not stored.deferred or stored.lock_token is not None:
                raise MessageNotFound(f"No deferred message with sequence number {number}.")
            if lock:
                self._lock(entity, stored, now)
            else:
                del entity.messages[number]
            found.append(stored)
        return found

    def counts(self, queue_name: str) -> dict[str, int]:
        """Active, scheduled, deferred, locked and dead-lettered message counts."""
        queue = self.queues[queue_name]
        now = self.clock()
        messages = list(queue.active.messages.values())
        return {
            "active": sum(1 for s in messages if s.visible_at <= now and not s.deferred),
            "scheduled": sum(1 for s in messages if s.visible_at > now),
            "deferred": sum(1 for s in messages if s.deferred),
            "locked": len(queue.active.locks),
            "dead_letter": len(queue.dead_letter.messages),
        }


def _split_address(address: str) -> tuple[str, bool]:
    if address.endswith(DEAD_LETTER_SUFFIX):
        return address[: -len(DEAD_LETTER_SUFFIX)], True
    return address, False


def _deadlines(entity: Entity, now: float) -> Iterator[float]:
    for stored in entity.messages.values():
        if stored.locked_until is not None:
            yield stored.locked_until
        elif stored.visible_at > now:
            yield stored.visible_at


def _scheduled_time(message: Message) -> float | None:
    value = message.message_annotations.get(Symbol("x-opt-scheduled-enqueue-time"))
    return value / 1000 if isinstance(value, int) else None
