"""What the web console needs beyond the other services: the collections in use.

Sheaf keeps no table of collections: a collection exists while a live document names it,
so the list is one grouped count over the documents (`collection_counts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sheaf.services.deps import Deps


@dataclass(slots=True)
class CollectionSummary:
    """Live documents per status in one collection."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class CollectionList:
    collections: list[CollectionSummary]
    complete: bool = True  # kept in the API's answer; the grouped count always sees all


def _everything(collection: str) -> bool:
    return True


async def list_collections(
    deps: Deps, visible: Callable[[str], bool] = _everything
) -> CollectionList:
    """The collections with live documents, sorted by name.

    `visible` says which collections the caller may know of; the others are left out as
    if they did not exist.
    """
    counts = await deps.store.collection_counts()
    return CollectionList(
        [CollectionSummary(name, counts[name]) for name in sorted(counts) if visible(name)]
    )
