"""Settlement: what to do with a delivered wake-up, given what the database decided.

ARCHITECTURE.md §4 as code. A message only names a document; the worker acquires the
lease, runs the pipeline, and settles the message from the typed results it got back —
never from message state, and without reading the row again:

    body not a valid message                      dead-letter `malformed_message`
    no lease: missing (no such document ever)     dead-letter `unknown_document`
    no lease: not ready, message current          schedule a wake-up at not_before, complete
    no lease: terminal / held / stale message     complete (nothing to do)
    completed, or lease lost to another worker    complete
    released as queued (transient, attempts left) schedule the retry at not_before, complete
    released as failed (permanent or exhausted)   dead-letter with the reason and what to do
    release refused (stale token) or failed       complete (the row's owner or the sweeper
                                                  re-sends; recovery never needs this one)
    shutting down mid-document                    abandon (released as interrupted already)

`decide_*` are pure functions of those results; `consume` runs one delivery through them.
Only a dead-letter after a failed attempt reads the row, for the filename and attempt count
a human needs in its description.
The worker passes its own `acquire` (which rides out database outages behind its circuit
breaker with the message kept locked) and `process` (which feeds the breaker), so this
module knows nothing of slots or backoff. A lost message lock never raises: settling just
returns False and the redelivery finds the row decided.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from sheaf import metrics
from sheaf.domain.messages import MalformedMessage, decode
from sheaf.domain.models import (
    AcquireOutcome,
    AcquireResult,
    AttemptResult,
    Dispatch,
    Lease,
    Processed,
    Status,
)
from sheaf.errors import TransientError
from sheaf.ports import Delivery, DocumentRepository, MessageBus
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)


class Action(StrEnum):
    COMPLETE = "complete"
    ABANDON = "abandon"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Settle:
    """The decision for one delivery: `wake_later` is scheduled before the action."""

    action: Action
    reason: str = ""
    description: str = ""
    wake_later: Dispatch | None = None


COMPLETE = Settle(Action.COMPLETE)
ABANDON = Settle(Action.ABANDON)

Acquire = Callable[[Dispatch], Awaitable[AcquireResult]]
Process = Callable[[Lease], Awaitable[AttemptResult]]


def decide_malformed(problem: str) -> Settle:
    return Settle(Action.DEAD_LETTER, "malformed_message", f"{problem}; message dropped")


def decide_without_lease(wake: Dispatch, result: AcquireResult) -> Settle:
    if result.outcome is AcquireOutcome.MISSING:
        return Settle(
            Action.DEAD_LETTER,
            "unknown_document",
            f"no document {wake.document_id} exists in collection {wake.collection}; "
            "the message cannot be processed and was set aside",
        )
    current = result.dispatch_seq is not None and wake.dispatch_seq >= result.dispatch_seq
    if result.outcome is AcquireOutcome.NOT_READY and current:
        later = Dispatch(
            wake.document_id, wake.collection, wake.dispatch_seq, not_before=result.not_before
        )
        return Settle(Action.COMPLETE, wake_later=later)
    return COMPLETE


def decide_after_attempt(lease: Lease, attempt: AttemptResult) -> Settle:
    release = attempt.release
    if attempt.outcome in (Processed.COMPLETED, Processed.LEASE_LOST):
        return COMPLETE
    if release is None or not release.applied:
        return COMPLETE
    if release.status is Status.FAILED:
        assert attempt.error is not None  # a failed attempt always says why
        what = f"document {lease.document_id} in {lease.collection}"
        why = f"failed on attempt {lease.attempt}: {attempt.error.message}"
        return Settle(Action.DEAD_LETTER, attempt.error.code, _what_to_do(what, why, lease))
    if release.status is Status.QUEUED:
        seq = release.dispatch_seq if release.dispatch_seq is not None else lease.dispatch_seq
        later = Dispatch(lease.document_id, lease.collection, seq, not_before=release.not_before)
        return Settle(Action.COMPLETE, wake_later=later)
    return COMPLETE


async def consume(deps: Deps, delivery: Delivery, acquire: Acquire, process: Process) -> Settle:
    """Decode, acquire, process and settle one delivery; return what was decided.

    Cancelled mid-document (shutdown), the document was released as interrupted by
    `process`; the message is abandoned so another worker gets it at once.
    """
    try:
        wake = decode(delivery.body)
    except MalformedMessage as exc:
        decision = decide_malformed(exc.message)
    else:
        result = await acquire(wake)
        if result.lease is None:
            decision = decide_without_lease(wake, result)
        else:
            try:
                attempt = await process(result.lease)
            except asyncio.CancelledError:
                await asyncio.shield(delivery.abandon())
                raise
            decision = decide_after_attempt(result.lease, attempt)
            if decision.action is Action.DEAD_LETTER:
                decision = await _described(deps.store, result.lease, decision)
    await apply(deps.bus, delivery, decision)
    return decision


async def apply(bus: MessageBus, delivery: Delivery, decision: Settle) -> bool:
    """Schedule the wake-up the decision asks for, then settle; False if the lock was lost."""
    if decision.wake_later is not None:
        await _schedule(bus, decision.wake_later)
    if decision.action is Action.DEAD_LETTER:
        return await delivery.dead_letter(decision.reason, decision.description)
    if decision.action is Action.ABANDON:
        return await delivery.abandon()
    return await delivery.complete()


async def _described(store: DocumentRepository, lease: Lease, decision: Settle) -> Settle:
    """The failure told with the row's filename and attempts, when the row can be read."""
    try:
        document = await store.get_document(lease.document_id, history=False)
    except TransientError:
        return decision  # the description from the lease alone says enough
    if document is None:
        return decision
    what = f"{document.filename} in {document.collection}"
    why = (
        f"failed after {document.attempts} of {document.max_attempts} attempts: "
        f"{document.last_error} (document {document.id})"
    )
    return dataclasses.replace(decision, description=_what_to_do(what, why, lease))


def _what_to_do(what: str, why: str, lease: Lease) -> str:
    return (
        f"{what} {why}. Fix the cause, then `sheaf dlq resubmit` or "
        f"`sheaf failed retry {lease.document_id}`."
    )


async def _schedule(bus: MessageBus, wake: Dispatch) -> None:
    try:
        await bus.send([wake])
    except TransientError as exc:
        log.warning(
            "could not schedule the wake-up; the reconciler will", extra={"error": exc.message}
        )
        return
    metrics.SERVICEBUS_SCHEDULED.inc()
