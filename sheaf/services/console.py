"""What the web console needs beyond the other services: the collections in use.

Sheaf keeps no table of collections: a collection exists while a live document names it.
The document repository has no grouped query for that, so this walks the newest documents
page by page, at most `MAX_SCAN` of them, and says whether it saw them all. That keeps a
console request bounded on any database; a collection whose documents are all older than
the scan is missing from the list (the console still lets a person type its name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sheaf.services import documents
from sheaf.services.deps import Deps

MAX_SCAN = 5000
PAGE = documents.MAX_PAGE


@dataclass(slots=True)
class CollectionSummary:
    """Live documents per status in one collection, among the documents scanned."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class CollectionList:
    collections: list[CollectionSummary]
    complete: bool  # False: more live documents exist than were scanned


def _everything(collection: str) -> bool:
    return True


async def list_collections(
    deps: Deps, visible: Callable[[str], bool] = _everything, scan: int = MAX_SCAN
) -> CollectionList:
    """Collections named by the newest `scan` live documents, sorted by name.

    `visible` says which collections the caller may know of; the others are left out as
    if they did not exist (they still count towards the scan).
    """
    found: dict[str, CollectionSummary] = {}
    cursor: str | None = None
    seen = 0
    while True:
        page = await documents.list_page(deps, None, None, cursor, min(PAGE, scan - seen))
        for doc in page.documents:
            if not visible(doc.collection):
                continue
            summary = found.setdefault(doc.collection, CollectionSummary(doc.collection))
            summary.counts[doc.status.value] = summary.counts.get(doc.status.value, 0) + 1
        seen += len(page.documents)
        cursor = page.next_cursor
        if cursor is None or seen >= scan:
            break
    return CollectionList(sorted(found.values(), key=lambda c: c.name), complete=cursor is None)
