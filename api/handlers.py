"""HTTP handlers: parse the request, call one service function, map the result."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam

from api import openapi as openapi_document
from api import views
from api.keys import DEPS
from sheaf import metrics, observability
from sheaf.domain.models import SearchFilter, SearchMode, Status
from sheaf.errors import ClientError, UploadTooLarge
from sheaf.observability import LoopMonitor
from sheaf.services import dlq, documents, ingest
from sheaf.services import search as searching

MONITOR = web.AppKey("loop_monitor", LoopMonitor)  # started by the app's cleanup_ctx

READ_BLOCK = 256 * 1024
MULTIPART_SLACK = 64 * 1024  # room for boundaries and part headers around the file


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def upload(request: web.Request) -> web.Response:
    try:
        result = await _accept(request)
    except ClientError as exc:
        metrics.UPLOADS.labels(result="rejected", error_code=exc.code).inc()
        raise
    metrics.UPLOADS.labels(result="created" if result.created else "duplicate", error_code="").inc()
    doc = result.document
    body = {**views.document(doc, history=False), "duplicate": not result.created}
    headers = {"Location": f"/v1/documents/{doc.id}"}
    return web.json_response(body, status=202 if result.created else 200, headers=headers)


async def _accept(request: web.Request) -> ingest.UploadResult:
    deps = request.app[DEPS]
    limit = deps.settings.max_upload_bytes
    if request.content_length and request.content_length > limit + MULTIPART_SLACK:
        raise UploadTooLarge(
            f"the upload is larger than the limit of {limit} bytes (SHEAF_MAX_UPLOAD_BYTES)"
        )
    if not request.content_type.startswith("multipart/"):
        raise ClientError(
            "send the file as multipart/form-data in a field named 'file' "
            "(curl -F file=@report.pdf …)",
            code="not_multipart",
        )
    try:
        reader = await request.multipart()
    except MALFORMED as exc:  # e.g. multipart/form-data without a boundary
        raise _malformed(exc) from exc
    part, filename = await _file_part(reader)
    return await ingest.accept_upload(
        deps, request.match_info["collection"], filename, _body(part, reader)
    )


# What aiohttp raises for a body that is not well-formed multipart (a cut-off stream, a part
# header with a raw NUL or line break, …): always the client's fault, so 400.
BAD_DISPOSITION = (BadContentDispositionHeader, BadContentDispositionParam)
MALFORMED = (ValueError, AssertionError, ConnectionError, HttpProcessingError, *BAD_DISPOSITION)


def strict_multipart() -> None:
    """Make aiohttp raise, not just warn, on a Content-Disposition it cannot parse.

    By default it warns and carries on as if the part had no name, so a header broken by
    a raw line break would end as "missing_file" (or, where warnings are errors, as 500).
    As errors, `MALFORMED` catches them: 400 malformed_upload. Only these two categories,
    raised only by aiohttp's multipart parser, change; installing twice is harmless.
    """
    for category in BAD_DISPOSITION:
        warnings.filterwarnings("error", category=category)


def _malformed(exc: Exception) -> ClientError:
    return ClientError(
        f"the upload body is malformed or was cut off ({exc}); send it again",
        code="malformed_upload",
    )


async def _file_part(reader: MultipartReader) -> tuple[BodyPartReader, str | None]:
    """The part named `file` and its filename as sent (display metadata only)."""
    while True:
        try:
            part = await reader.next()
            if isinstance(part, BodyPartReader) and part.name == "file":
                return part, part.filename
            if part is not None:
                await part.release()  # other form fields are ignored
        except MALFORMED as exc:
            raise _malformed(exc) from exc
        if part is None:
            raise ClientError(
                "no file in the upload: send it in a multipart field named 'file'",
                code="missing_file",
            )


async def _body(part: BodyPartReader, reader: MultipartReader) -> AsyncIterator[bytes]:
    """The file's bytes; refuses a second file before the first one is committed."""
    try:
        while block := await part.read_chunk(READ_BLOCK):
            yield block
        while (extra := await reader.next()) is not None:
            if isinstance(extra, BodyPartReader) and extra.name == "file":
                raise ClientError("send one file per upload", code="multiple_files")
            await extra.release()
    except MALFORMED as exc:
        raise _malformed(exc) from exc


async def get_document(request: web.Request) -> web.Response:
    doc = await documents.get(request.app[DEPS], request.match_info["document_id"])
    return _json(views.document(doc))


async def delete_document(request: web.Request) -> web.Response:
    doc = await documents.delete(request.app[DEPS], request.match_info["document_id"])
    return _json(views.document(doc, history=False), status=202)


async def retry_document(request: web.Request) -> web.Response:
    doc = await documents.retry(request.app[DEPS], request.match_info["document_id"])
    return _json(views.document(doc, history=False), status=202)


async def list_documents(request: web.Request) -> web.Response:
    collection = request.match_info["collection"]
    status = _status(request.query.get("status"))
    page = await documents.list_page(
        request.app[DEPS],
        collection,
        status,
        request.query.get("cursor"),
        _int(request, "limit", 50),
    )
    query = {"status": status.value} if status else {}
    base = f"/v1/collections/{collection}/documents"
    return _json(views.document_page(page.documents, page.next_cursor, base, query))


async def failed_documents(request: web.Request) -> web.Response:
    page = await documents.failed(
        request.app[DEPS], request.query.get("cursor"), _int(request, "limit", 50)
    )
    return _json(views.document_page(page.documents, page.next_cursor, "/v1/admin/failed", {}))


async def dlq_list(request: web.Request) -> web.Response:
    page = await dlq.list_entries(
        request.app[DEPS], request.query.get("reason") or None, _int(request, "limit", 50)
    )
    return _json(views.dlq_page(page))


async def dlq_show(request: web.Request) -> web.Response:
    raw = request.match_info["sequence_number"]
    if not (raw.isascii() and raw.isdigit()):  # "²".isdigit(), but int("²") fails
        raise ClientError(f"a sequence number is a whole number, not {raw!r}", code="bad_parameter")
    return _json(views.dlq_entry(await dlq.show(request.app[DEPS], int(raw))))


async def dlq_resubmit(request: web.Request) -> web.Response:
    body = await _json_body(request)
    result = await dlq.resubmit(
        request.app[DEPS],
        sequence_numbers=_sequence_numbers(body),
        reason=_optional_str(body, "reason"),
        dry_run=_bool(body, "dry_run"),
    )
    return _json(views.dlq_batch(result))


async def dlq_purge(request: web.Request) -> web.Response:
    body = await _json_body(request)
    result = await dlq.purge(
        request.app[DEPS],
        sequence_numbers=_sequence_numbers(body),
        reason=_optional_str(body, "reason"),
        confirm=_bool(body, "confirm"),
    )
    return _json(views.dlq_batch(result))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ClientError("the request body is not JSON", code="bad_json") from None
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object", code="bad_json")
    return body


def _sequence_numbers(body: dict[str, Any]) -> list[int] | None:
    raw = body.get("sequence_numbers")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in raw
    ):
        raise ClientError("sequence_numbers must be a list of integers", code="bad_parameter")
    return raw


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    raw = body.get(name)
    if raw is not None and not isinstance(raw, str):
        raise ClientError(f"{name} must be a string", code="bad_parameter")
    return raw or None


def _bool(body: dict[str, Any], name: str) -> bool:
    raw = body.get(name, False)
    if not isinstance(raw, bool):
        raise ClientError(f"{name} must be true or false", code="bad_parameter")
    return raw


async def search(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    collection = request.match_info["collection"]
    query = request.query.get("q", "")
    mode = _mode(request.query.get("mode"))
    filters = SearchFilter(
        document_ids=tuple(
            _no_nul(v, "document_id") for v in request.query.getall("document_id", [])
        ),
        filename=_no_nul(request.query.get("filename", ""), "filename") or None,
        uploaded_from=_time(request, "uploaded_from"),
        uploaded_to=_time(request, "uploaded_to"),
    )
    hits = await searching.search(deps, collection, query, _int(request, "k", 5), mode, filters)
    return _json(
        {
            "collection": collection,
            "query": query,
            "mode": mode.value,
            "model": deps.embedder.model,
            "results": [views.hit(h) for h in hits],
        }
    )


def _no_nul(raw: str, name: str) -> str:
    """A text filter as given; a NUL character (which PostgreSQL refuses) is a 400."""
    if "\x00" in raw:
        raise ClientError(f"{name} must not contain a NUL character", code="bad_parameter")
    return raw


def _mode(raw: str | None) -> SearchMode:
    if not raw:
        return SearchMode.HYBRID
    try:
        return SearchMode(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in SearchMode)
        raise ClientError(f"unknown mode {raw!r}; use one of {allowed}", code="bad_mode") from None


def _time(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time; one without an offset is UTC."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ClientError(
            f"{name} must be an ISO 8601 time such as 2026-12-06T14:30:00Z, not {raw[:64]!r}",
            code="bad_parameter",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def stats(request: web.Request) -> web.Response:
    return _json(views.stats(await documents.stats(request.app[DEPS])))


async def healthz(request: web.Request) -> web.Response:
    healthy, body = request.app[MONITOR].status()
    return _json(body, status=200 if healthy else 503)


async def readyz(request: web.Request) -> web.Response:
    result = await observability.readiness(request.app[DEPS])
    return _json(result.body(), status=200 if result.ready else 503)


async def openapi(request: web.Request) -> web.Response:
    """The document as this server answers: without credentials when auth is off."""
    auth = request.app[DEPS].settings.auth_mode != "none"
    return _json(openapi_document.document(auth=auth))


async def prometheus(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def _status(raw: str | None) -> Status | None:
    if not raw:
        return None
    try:
        return Status(raw)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise ClientError(
            f"unknown status {raw!r}; use one of {allowed}", code="bad_status"
        ) from None


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ClientError(f"{name} must be an integer, not {raw!r}", code="bad_parameter") from None
