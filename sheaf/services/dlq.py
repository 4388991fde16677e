"""The dead-letter queue tooling: list, show, resubmit and purge (Service Bus only).

The canonical list of what needs a human is the `failed` rows (`sheaf failed list`); the
DLQ view mirrors it with Service Bus's own facts (reason, description, delivery count,
enqueued time), each message joined with the document it names.

Re-drive is compare-and-set (ARCHITECTURE.md §4). For each chosen dead-lettered message,
received in peek-lock:

    body not a valid message                  left in the DLQ, reported `malformed`
    no such document                          left in the DLQ, reported `unknown_document`
    row failed, message seq <= row seq        retry_document (failed → queued, fresh
                                              attempts, seq + 1), send the fresh wake-up,
                                              complete the message: `redriven`
    row failed, message seq > row seq         left, reported `inconsistent` (cannot happen:
                                              a message's seq always comes from its row)
    row not failed (queued, processing,       complete the message: `already_handled`;
    completed, deleted)                       a queued row gets its wake-up re-sent

Why "message seq <= row seq" and not only "==": a permanent failure does not bump
`dispatch_seq`, so the failure a message was dead-lettered for normally carries the row's
own seq. But the failing attempt may have been woken by a stale message (the upload's
message arriving after a reconciler re-send) or the message may come from a worker whose
lease expired while the sweeper re-dispatched the row; then the message is older than the
row although the row's current failure is exactly the one it reports. A row leaves
`failed` only through `retry_document`, which is the conditional update itself: of two
messages for one document, or two concurrent resubmits, exactly one resets the row and
the others find it `queued` and only complete their message.

Re-running after an interruption at any point loses nothing and processes nothing twice:

- before the reset: nothing changed; the message is still in the DLQ (its lock expires).
- after the reset, before the wake-up was sent: the re-run finds the row `queued`,
  re-sends the wake-up for the row's current seq and completes the message (the
  reconciler would send it too).
- after the send, before the completion: the re-run finds the row no longer failed and
  completes the message; the re-sent wake-up has the same message id
  (`{document_id}:{dispatch_seq}`), so duplicate detection drops it, and a wake-up for a
  row that is processing or completed is a no-op anyway.

One case re-drives again on purpose: if the re-driven document failed again before the
re-run, the row is `failed` once more and the old message still names it, so it is
re-driven again, exactly as `sheaf failed retry` would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sheaf.domain.messages import MalformedMessage, decode
from sheaf.domain.models import Dispatch, Document, Status
from sheaf.errors import ClientError, NotFound, TransientError
from sheaf.ports import DeadLetter, DeadLetterView
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

MAX_LIST = 1000
DEFAULT_LIST = 50
MAX_SCAN = 5000  # messages one resubmit or purge pass looks at, at most
NOT_CONFIGURED = (
    "the dead-letter queue exists only with SHEAF_MESSAGE_BUS=servicebus; failed documents "
    "are listed by `sheaf failed list`"
)


class Outcome(StrEnum):
    REDRIVEN = "redriven"  # row reset, fresh wake-up sent, DLQ message completed
    ALREADY_HANDLED = "already_handled"  # row no longer failed; DLQ message completed
    MALFORMED = "malformed"  # left in the DLQ (purge removes it)
    UNKNOWN_DOCUMENT = "unknown_document"  # left in the DLQ (purge removes it)
    INCONSISTENT = "inconsistent"  # message newer than its row; left in the DLQ
    PURGED = "purged"


SETTLED = frozenset({Outcome.REDRIVEN, Outcome.ALREADY_HANDLED, Outcome.PURGED})


@dataclass(frozen=True, slots=True)
class Entry:
    """One dead-lettered message, joined with the document it names (if any)."""

    sequence_number: int
    message_id: str
    reason: str | None
    description: str | None
    delivery_count: int
    enqueued_at: datetime | None
    document_id: str | None
    collection: str | None
    dispatch_seq: int | None
    filename: str | None
    document_status: Status | None
    problem: str | None  # why the body is not a valid message


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: list[Entry]
    limit: int
    more: bool  # the DLQ holds more (matching or not) than were looked at


@dataclass(frozen=True, slots=True)
class Item:
    """What happened (or, in a dry run, would happen) to one dead-lettered message."""

    sequence_number: int
    message_id: str
    reason: str | None
    document_id: str | None
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    dry_run: bool
    items: list[Item] = field(default_factory=list)
    not_found: list[int] = field(default_factory=list)  # sequence numbers not in the DLQ

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome is outcome)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages: these sequence numbers, and/or this dead-letter reason."""

    sequence_numbers: frozenset[int] | None = None
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if (
            self.sequence_numbers is not None
            and letter.sequence_number not in self.sequence_numbers
        ):
            return False
        return self.reason is None or letter.reason == self.reason

    @property
    def empty(self) -> bool:
        return self.sequence_numbers is None and self.reason is None


def dead_letter_queue(deps: Deps) -> DeadLetterView:
    if deps.queue is None:
        raise ClientError(NOT_CONFIGURED, code="no_dead_letter_queue")
    return deps.queue


async def list_entries(
    deps: Deps, reason: str | None = None, limit: int = DEFAULT_LIST
) -> EntryPage:
    """Up to `limit` dead-lettered messages (oldest first), by peeking: nothing is locked."""
    dlq = dead_letter_queue(deps)
    limit = max(1, min(limit, MAX_LIST))
    wanted = Filter(reason=reason or None)
    scan = limit + 1 if wanted.empty else MAX_SCAN
    letters = [letter for letter in await dlq.peek_dead_letters(scan) if wanted.matches(letter)]
    entries = [await _entry(deps, letter) for letter in letters[:limit]]
    more = len(letters) > limit
    return EntryPage(entries, limit, more)


async def show(deps: Deps, sequence_number: int) -> Entry:
    dlq = dead_letter_queue(deps)
    page = await dlq.peek_dead_letters(1, sequence_number)
    if not page or page[0].sequence_number != sequence_number:
        raise NotFound(
            f"no message with sequence number {sequence_number} in the dead-letter queue"
        )
    return await _entry(deps, page[0])


async def resubmit(
    deps: Deps,
    *,
    sequence_numbers: Collection[int] | None = None,
    reason: str | None = None,
    dry_run: bool = False,
    limit: int = MAX_SCAN,
) -> BatchResult:
    """Re-drive the chosen messages' documents, compare-and-set (see the module doc)."""
    dlq = dead_letter_queue(deps)
    wanted = _filter(sequence_numbers, reason, "resubmit")
    if dry_run:
        return await _dry_run(deps, dlq, wanted, limit)
    items: list[Item] = []

    async def handle(letter: DeadLetter) -> bool:
        if not wanted.matches(letter):
            return False
        item = await _redrive(deps, letter)
        items.append(item)
        return item.outcome in SETTLED

    await dlq.take_dead_letters(handle, enough=_enough(wanted, items), limit=limit)
    return BatchResult(False, items, _not_found(wanted, items))


async def purge(
    deps: Deps,
    *,
    sequence_numbers: Collection[int] | None = None,
    reason: str | None = None,
    confirm: bool = False,
    limit: int = MAX_SCAN,
) -> BatchResult:
    """Remove the chosen messages from the DLQ for good (the rows are not touched).

    With no filter at all, every message goes. The caller must pass `confirm=True`.
    """
    dlq = dead_letter_queue(deps)
    wanted = Filter(frozenset(sequence_numbers) if sequence_numbers else None, reason or None)
    if not confirm:
        raise ClientError(
            'purging removes dead-lettered messages for good; confirm it ("confirm": true, '
            "or `sheaf dlq purge --yes`)",
            code="confirmation_required",
        )
    items: list[Item] = []

    async def handle(letter: DeadLetter) -> bool:
        if not wanted.matches(letter):
            return False
        wake = _decoded(letter)
        document_id = wake.document_id if isinstance(wake, Dispatch) else None
        items.append(_item(letter, document_id, Outcome.PURGED, "removed from the DLQ"))
        return True

    await dlq.take_dead_letters(handle, enough=_enough(wanted, items), limit=limit)
    return BatchResult(False, items, _not_found(wanted, items))


# -- the compare-and-set ------------------------------------------------------------------


async def _redrive(deps: Deps, letter: DeadLetter) -> Item:
    wake = _decoded(letter)
    if isinstance(wake, str):
        return _item(letter, None, Outcome.MALFORMED, f"{wake}; left in the DLQ (purge it)")
    document = await deps.store.get_document(wake.document_id, history=False)
    outcome, detail = _decide(wake, document)
    if outcome is Outcome.REDRIVEN:
        reset = await deps.store.retry_document(wake.document_id)
        if reset is None or reset.status is not Status.QUEUED:  # lost a race: fine
            state = reset.status.value if reset else "gone"
            return _item(letter, wake.document_id, Outcome.ALREADY_HANDLED, f"document is {state}")
        sent = await _wake_up(deps, reset)
        detail = f"document queued again (dispatch {reset.dispatch_seq}){sent}"
        return _item(letter, wake.document_id, Outcome.REDRIVEN, detail)
    if document is not None and document.status is Status.QUEUED:
        detail += await _wake_up(deps, document)  # maybe the reset of an interrupted run
    return _item(letter, wake.document_id, outcome, detail)


def _decide(wake: Dispatch, document: Document | None) -> tuple[Outcome, str]:
    if document is None:
        return Outcome.UNKNOWN_DOCUMENT, "no such document; left in the DLQ (purge it)"
    if document.status is not Status.FAILED:
        return Outcome.ALREADY_HANDLED, f"document is {document.status.value}"
    if wake.dispatch_seq > document.dispatch_seq:
        return Outcome.INCONSISTENT, (
            f"the message speaks of dispatch {wake.dispatch_seq} but the document is at "
            f"{document.dispatch_seq}; left in the DLQ"
        )
    return Outcome.REDRIVEN, f"document failed ({document.error_code}): queue it again"


async def _wake_up(deps: Deps, document: Document) -> str:
    dispatch = Dispatch(
        document.id, document.collection, document.dispatch_seq, not_before=document.not_before
    )
    try:
        await deps.bus.send([dispatch])
    except TransientError as exc:
        log.warning("could not send the wake-up; the reconciler will", extra={"error": exc.message})
        return "; wake-up not sent (the reconciler sends it)"
    return "; wake-up sent"


async def _dry_run(deps: Deps, dlq: DeadLetterView, wanted: Filter, limit: int) -> BatchResult:
    items: list[Item] = []
    for letter in await dlq.peek_dead_letters(limit):
        if not wanted.matches(letter):
            continue
        wake = _decoded(letter)
        if isinstance(wake, str):
            items.append(_item(letter, None, Outcome.MALFORMED, f"{wake}; would be left"))
            continue
        document = await deps.store.get_document(wake.document_id, history=False)
        outcome, detail = _decide(wake, document)
        items.append(_item(letter, wake.document_id, outcome, f"would be: {detail}"))
    return BatchResult(True, items, _not_found(wanted, items))


# -- helpers --------------------------------------------------------------------------------


def _filter(sequence_numbers: Collection[int] | None, reason: str | None, what: str) -> Filter:
    wanted = Filter(frozenset(sequence_numbers) if sequence_numbers else None, reason or None)
    if wanted.empty:
        raise ClientError(
            f"say which messages to {what}: sequence numbers, or a reason filter",
            code="no_filter",
        )
    return wanted


def _enough(wanted: Filter, items: list[Item]) -> Callable[[], bool]:
    if wanted.sequence_numbers is None:
        return lambda: False
    numbers = wanted.sequence_numbers
    return lambda: numbers <= {item.sequence_number for item in items}


def _not_found(wanted: Filter, items: list[Item]) -> list[int]:
    if wanted.sequence_numbers is None:
        return []
    return sorted(wanted.sequence_numbers - {item.sequence_number for item in items})


def _decoded(letter: DeadLetter) -> Dispatch | str:
    try:
        return decode(letter.body)
    except MalformedMessage as exc:
        return exc.message


def _item(letter: DeadLetter, document_id: str | None, outcome: Outcome, detail: str) -> Item:
    return Item(
        letter.sequence_number, letter.message_id, letter.reason, document_id, outcome, detail
    )


async def _entry(deps: Deps, letter: DeadLetter) -> Entry:
    wake = _decoded(letter)
    document = None
    if isinstance(wake, Dispatch):
        document = await deps.store.get_document(wake.document_id, history=False)
    return Entry(
        sequence_number=letter.sequence_number,
        message_id=letter.message_id,
        reason=letter.reason,
        description=letter.description,
        delivery_count=letter.delivery_count,
        enqueued_at=letter.enqueued_at,
        document_id=wake.document_id if isinstance(wake, Dispatch) else None,
        collection=wake.collection if isinstance(wake, Dispatch) else None,
        dispatch_seq=wake.dispatch_seq if isinstance(wake, Dispatch) else None,
        filename=document.filename if document else None,
        document_status=document.status if document else None,
        problem=wake if isinstance(wake, str) else None,
    )
