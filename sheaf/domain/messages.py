"""Wake-up messages: what travels on the queue, and how a worker reads it.

A message only says "look at this document"; the database decides everything else. The
body is JSON `{"document_id", "collection", "dispatch_seq"}` and the message id is
`"{document_id}:{dispatch_seq}"`, so Service Bus duplicate detection drops a true
duplicate but never a recovery message (every deliberate send bumps `dispatch_seq`).
A scheduled wake-up for a document that is not ready yet re-uses the current
`dispatch_seq` and adds the time it is for, so it is not mistaken for the original.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sheaf.domain.models import Dispatch
from sheaf.errors import PermanentError

FIELDS = frozenset({"document_id", "collection", "dispatch_seq"})
CONTENT_TYPE = "application/json"


class MalformedMessage(PermanentError):
    code = "malformed_message"


def message_id(dispatch: Dispatch) -> str:
    base = f"{dispatch.document_id}:{dispatch.dispatch_seq}"
    if dispatch.not_before is None:
        return base
    return f"{base}:at:{dispatch.not_before.timestamp():.3f}"


def encode(dispatch: Dispatch) -> str:
    return json.dumps(
        {
            "document_id": dispatch.document_id,
            "collection": dispatch.collection,
            "dispatch_seq": dispatch.dispatch_seq,
        },
        separators=(",", ":"),
    )


def decode(body: bytes | str) -> Dispatch:
    """Parse a message body; `MalformedMessage` says exactly what is wrong with it.

    The wake-up is the `Dispatch` that was sent, less its schedule (which is only a time).
    """
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"the body is JSON {type(data).__name__}, not an object")
    if missing := FIELDS - data.keys():
        raise MalformedMessage(f"the body lacks {', '.join(sorted(missing))}")
    if unknown := data.keys() - FIELDS:
        raise MalformedMessage(f"the body has unknown fields {', '.join(sorted(unknown))}")
    document_id, collection, seq = data["document_id"], data["collection"], data["dispatch_seq"]
    if not (isinstance(document_id, str) and isinstance(collection, str)):
        raise MalformedMessage("document_id and collection must be strings")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise MalformedMessage(f"dispatch_seq must be a positive integer, not {seq!r}")
    return Dispatch(document_id, collection, seq)


def when(dispatch: Dispatch, now: datetime) -> datetime | None:
    """The time to schedule the message for, or None to send it now."""
    if dispatch.not_before is None or dispatch.not_before <= now:
        return None
    return dispatch.not_before
