"""JSON shapes of the API: one function per resource, nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sheaf.domain.failures import retry_can_help
from sheaf.domain.models import Attempt, Document, SearchHit, Stats
from sheaf.services.dlq import BatchResult, Entry, EntryPage, Item


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def document_links(document: Document) -> dict[str, str]:
    links = {
        "self": f"/v1/documents/{document.id}",
        "collection": f"/v1/collections/{document.collection}/documents",
    }
    if retry_can_help(document):
        links["retry"] = f"/v1/documents/{document.id}/retry"
    return links


def document(doc: Document, *, history: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": doc.id,
        "collection": doc.collection,
        "filename": doc.filename,
        "status": doc.status.value,
        "attempts": doc.attempts,
        "max_attempts": doc.max_attempts,
        "current_stage": doc.current_stage,
        "last_error": doc.last_error,
        "error_code": doc.error_code,
        "error_kind": doc.error_kind.value if doc.error_kind else None,
        "chunk_count": doc.chunk_count,
        "page_count": doc.page_count,
        "size_bytes": doc.size_bytes,
        "content_type": doc.content_type,
        "sha256": doc.sha256,
        "not_before": _time(doc.not_before),
        "lease": {"owner": doc.lease_owner, "expires_at": _time(doc.lease_expires_at)}
        if doc.lease_owner
        else None,
        "created_at": _time(doc.created_at),
        "updated_at": _time(doc.updated_at),
        "started_at": _time(doc.started_at),
        "completed_at": _time(doc.completed_at),
        "deleted_at": _time(doc.deleted_at),
        "links": document_links(doc),
    }
    if history:
        body["history"] = [attempt(a) for a in doc.history]
    return body


def attempt(item: Attempt) -> dict[str, Any]:
    duration = (item.ended_at - item.started_at).total_seconds() if item.ended_at else None
    return {
        "number": item.number,
        "worker": item.worker_id,
        "started_at": _time(item.started_at),
        "ended_at": _time(item.ended_at),
        "duration_seconds": duration,
        "outcome": item.outcome.value,
        "stage": item.stage,
        "error_code": item.error_code,
        "error": item.error,
        "stage_seconds": item.stage_seconds,
    }


def document_page(
    documents: list[Document], next_cursor: str | None, base: str, query: dict[str, str]
) -> dict[str, Any]:
    links = {}
    if next_cursor:
        links["next"] = f"{base}?{urlencode({**query, 'cursor': next_cursor})}"
    return {
        "documents": [document(d, history=False) for d in documents],
        "next_cursor": next_cursor,
        "links": links,
    }


def hit(item: SearchHit) -> dict[str, Any]:
    return {
        "document_id": item.document_id,
        "filename": item.filename,
        "chunk": item.chunk_ordinal,
        "pages": list(range(item.page_start, item.page_end + 1)),
        "score": round(item.score, 6),
        "rankings": dict(item.rankings),
        "text": item.text,
        "links": {"document": f"/v1/documents/{item.document_id}"},
    }


def stats(item: Stats) -> dict[str, Any]:
    return {
        "counts": item.counts,
        "oldest_ready_age_seconds": item.oldest_ready_age_seconds,
        "leases_held": item.leases_held,
    }


def dlq_entry(entry: Entry) -> dict[str, Any]:
    links = {"self": f"/v1/admin/dlq/{entry.sequence_number}"}
    if entry.document_id is not None:
        links["document"] = f"/v1/documents/{entry.document_id}"
    return {
        "sequence_number": entry.sequence_number,
        "message_id": entry.message_id,
        "reason": entry.reason,
        "description": entry.description,
        "delivery_count": entry.delivery_count,
        "enqueued_at": _time(entry.enqueued_at),
        "document_id": entry.document_id,
        "collection": entry.collection,
        "dispatch_seq": entry.dispatch_seq,
        "filename": entry.filename,
        "document_status": entry.document_status.value if entry.document_status else None,
        "problem": entry.problem,
        "links": links,
    }


def dlq_page(page: EntryPage) -> dict[str, Any]:
    return {
        "messages": [dlq_entry(e) for e in page.entries],
        "limit": page.limit,
        "more": page.more,
    }


def dlq_item(item: Item) -> dict[str, Any]:
    return {
        "sequence_number": item.sequence_number,
        "message_id": item.message_id,
        "reason": item.reason,
        "document_id": item.document_id,
        "outcome": item.outcome.value,
        "detail": item.detail,
    }


def dlq_batch(result: BatchResult) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for item in result.items:
        counts[item.outcome.value] = counts.get(item.outcome.value, 0) + 1
    return {
        "dry_run": result.dry_run,
        "results": [dlq_item(i) for i in result.items],
        "counts": counts,
        "not_found": result.not_found,
    }


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
