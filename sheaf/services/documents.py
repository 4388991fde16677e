"""Reading and managing documents: what the API and CLI show and change.

The tombstone rule lives here: deleting marks the row (which fences out any worker mid-
document in the same statement); the blob and chunks are removed later by
`housekeeping.clean`, and the row itself stays so late messages still find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sheaf.domain.models import Chunk, Dispatch, Document, Stats, Status
from sheaf.errors import BlobNotFound, Conflict, NotFound
from sheaf.services.deps import Deps
from sheaf.services.ingest import check_collection

MAX_PAGE = 200
MAX_CHUNKS = 500  # chunks per page of `chunks`


@dataclass(frozen=True, slots=True)
class ChunkPage:
    document: Document
    chunks: list[Chunk]
    total: int  # live chunks of the document


@dataclass(frozen=True, slots=True)
class DocumentPage:
    documents: list[Document]
    next_cursor: str | None


async def get(deps: Deps, document_id: str) -> Document:
    document = await deps.store.get_document(document_id)
    if document is None:
        raise NotFound(f"no document {document_id}")
    return document


async def chunks(deps: Deps, document_id: str, offset: int, limit: int) -> ChunkPage:
    """The live chunks of a document (its extracted text as indexed) from `offset` on."""
    document = await get(deps, document_id)
    found = await deps.store.document_chunks(document_id)
    start = max(offset, 0)
    return ChunkPage(document, found[start : start + max(1, min(limit, MAX_CHUNKS))], len(found))


async def download_original(deps: Deps, document_id: str, dest: Path) -> Document:
    """Copy the file as it was uploaded into the local file `dest`."""
    document = await get(deps, document_id)
    if document.status is Status.DELETED:
        raise NotFound(f"document {document_id} is deleted, and so is its file")
    try:
        await deps.blobs.download(document.blob_key, dest)
    except BlobNotFound:
        raise NotFound(f"the file of document {document_id} is no longer stored") from None
    return document


async def list_page(
    deps: Deps,
    collection: str | None,
    status: Status | None,
    cursor: str | None,
    limit: int,
) -> DocumentPage:
    """One page, newest first; pass `next_cursor` back to get the next one."""
    if collection is not None:
        check_collection(collection)
    limit = max(1, min(limit, MAX_PAGE))
    rows = await deps.store.list_documents(collection, status, cursor, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DocumentPage(rows, rows[-1].id if more else None)


async def delete(deps: Deps, document_id: str) -> Document:
    document = await deps.store.delete_document(document_id)
    if document is None:
        raise NotFound(f"no document {document_id}")
    return document


async def retry(deps: Deps, document_id: str) -> Document:
    """Put a failed document back in the queue with fresh attempts (compare-and-set)."""
    before = await get(deps, document_id)
    document = (
        await deps.store.retry_document(document_id) if before.status is Status.FAILED else None
    )
    if document is None or document.status is not Status.QUEUED:
        raise Conflict(
            f"document {document_id} is {(document or before).status.value}; only failed "
            "documents can be retried",
            code="not_failed",
        )
    await deps.bus.send([Dispatch(document.id, document.collection, document.dispatch_seq)])
    return document


async def failed(deps: Deps, cursor: str | None, limit: int) -> DocumentPage:
    """The documents that need a human, in every mode (with or without Service Bus)."""
    return await list_page(deps, None, Status.FAILED, cursor, limit)


async def stats(deps: Deps) -> Stats:
    return await deps.store.stats()
