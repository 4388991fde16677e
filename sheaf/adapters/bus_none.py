"""The message bus for polling mode: sends nothing.

With no Service Bus, workers find queued documents by polling the database
(`claim_queued_documents`), which is the source of truth anyway; a wake-up message would
only have made them faster. `enabled = False` tells the worker and readiness to poll.
"""

from __future__ import annotations

from collections.abc import Sequence

from sheaf.domain.models import Dispatch


class NoMessageBus:
    """`MessageBus` that drops every dispatch: the database row is all a worker needs."""

    def __init__(self) -> None:
        self.enabled = False

    async def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Nothing to do: a polling worker will claim the row."""

    async def close(self) -> None:
        """Nothing to release."""
