"""The /v1 routes the web console needs that the rest of the API lacks.

`GET /v1/collections` lists the collections in use, so a person can browse them instead of
remembering names. `GET /v1/admin/dashboard` is the operator's view: throughput, failures,
stage latencies, the queue over time and the workers at work (`sheaf.services.dashboard`).
Like every /v1 route they are plain JSON for any client, not only the console; each
handler parses, calls one service function and maps the result.

Access: the collections list is for any signed-in caller (`Target.CALLER` in `api.routes`);
the handler lists only the collections that caller may see, so nobody learns what other
tenants hold. The dashboard needs `admin` over every collection.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from api.keys import DEPS
from api.security import principal_of
from sheaf.domain.models import InFlight
from sheaf.errors import ClientError
from sheaf.services import console, documents
from sheaf.services import dashboard as board

QUEUE_HISTORY = web.AppKey("queue_history", board.QueueHistory)
DEFAULT_WINDOW_SECONDS = 900.0
DOWNLOAD_BLOCK = 256 * 1024


def register(app: web.Application) -> None:
    app[QUEUE_HISTORY] = board.QueueHistory()  # filled by the API's housekeeping tasks
    app.router.add_get("/v1/collections", list_collections)
    app.router.add_get("/v1/admin/dashboard", show_dashboard)
    app.router.add_get("/v1/documents/{document_id}/chunks", list_chunks)
    app.router.add_get("/v1/documents/{document_id}/content", download_original)


async def list_collections(request: web.Request) -> web.Response:
    visible = principal_of(request).sees
    found = await console.list_collections(request.app[DEPS], visible)
    return web.json_response(collection_list(found))


def collection_list(found: console.CollectionList) -> dict[str, Any]:
    return {
        "collections": [collection(c) for c in found.collections],
        "complete": found.complete,
    }


def collection(item: console.CollectionSummary) -> dict[str, Any]:
    base = f"/v1/collections/{item.name}"
    return {
        "name": item.name,
        "documents": item.documents,
        "counts": item.counts,
        "links": {"documents": f"{base}/documents", "search": f"{base}/search"},
    }


async def list_chunks(request: web.Request) -> web.Response:
    offset = _whole(request, "offset", 0)
    limit = _whole(request, "limit", 100)
    found = await documents.chunks(
        request.app[DEPS], request.match_info["document_id"], offset, limit
    )
    return web.json_response(
        {
            "document_id": found.document.id,
            "total": found.total,
            "offset": max(offset, 0),
            "chunks": [
                {"ordinal": c.ordinal, "page_start": c.page_start, "page_end": c.page_end}
                | {"text": c.text}
                for c in found.chunks
            ],
        }
    )


async def download_original(request: web.Request) -> web.StreamResponse:
    """The uploaded file, as an attachment (never shown inline: it is the uploader's)."""
    with tempfile.TemporaryDirectory(prefix="sheaf-download-") as folder:
        path = Path(folder) / "original"
        doc = await documents.download_original(
            request.app[DEPS], request.match_info["document_id"], path
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": doc.content_type,
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(doc.filename)}",
                "Content-Length": str(path.stat().st_size),
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        with path.open("rb") as file:
            while block := await asyncio.to_thread(file.read, DOWNLOAD_BLOCK):
                await response.write(block)
        await response.write_eof()
    return response


def _whole(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        message = f"{name} must be a whole number, not {raw!r}"
        raise ClientError(message, code="bad_parameter") from None


async def show_dashboard(request: web.Request) -> web.Response:
    window = _window(request.query.get("window"))
    found = await board.dashboard(request.app[DEPS], request.app[QUEUE_HISTORY], window)
    return web.json_response(dashboard_view(found))


def _window(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_WINDOW_SECONDS
    try:
        return board.clamp_window(int(raw))
    except ValueError:
        message = f"window must be a whole number of seconds, not {raw!r}"
        raise ClientError(message, code="bad_parameter") from None


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def dashboard_view(found: board.Dashboard) -> dict[str, Any]:
    return {
        "generated_at": _time(found.now),
        "window_seconds": found.window_seconds,
        "bucket_seconds": found.bucket_seconds,
        "throughput": [
            {"start": _time(b.start), "completed": b.completed, "failed": b.failed}
            | {"retried": b.retried}
            for b in found.throughput
        ],
        "failures": [{"error_code": code, "count": n} for code, n in found.failures],
        "stages": [
            {"stage": t.stage, "count": t.count}
            | {"p50_seconds": t.p50_seconds, "p95_seconds": t.p95_seconds}
            for t in found.stages
        ],
        "queue": [
            {"at": _time(q.at), "queued": q.queued, "processing": q.processing}
            | {"oldest_ready_age_seconds": q.oldest_ready_age_seconds}
            for q in found.queue
        ],
        "queue_sampled_since": _time(found.queue_sampled_since),
        "workers": [worker_view(w) for w in found.workers],
        "complete": found.complete,
    }


def worker_view(worker: board.Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "last_seen_at": _time(worker.last_seen_at),
        "last_heartbeat_at": _time(worker.last_heartbeat_at),
        "completed": worker.completed,
        "failed": worker.failed,
        "in_flight": [in_flight_view(f) for f in worker.in_flight],
    }


def in_flight_view(flight: InFlight) -> dict[str, Any]:
    return {
        "id": flight.document_id,
        "collection": flight.collection,
        "filename": flight.filename,
        "stage": flight.stage,
        "started_at": _time(flight.started_at),
        "heartbeat_at": _time(flight.heartbeat_at),
        "lease_expires_at": _time(flight.lease_expires_at),
    }
