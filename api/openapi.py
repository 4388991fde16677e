"""The OpenAPI 3.1 description of the API, served at /openapi.json.

Written as data, next to the views whose shapes it states (`api.views`): every response
object lists all its fields as required and allows no others, so a field added to a view
without a line here fails the schema checks (tests/e2e/test_schemathesis.py), and a route
added without an operation here fails tests/unit/test_openapi.py.
"""

from __future__ import annotations

import functools
from typing import Any

from sheaf.domain.models import AttemptOutcome, ErrorKind, SearchMode, Status
from sheaf.services.dlq import Outcome

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}


def _null(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _enum(values: Any) -> Schema:
    return {"type": "string", "enum": [v.value for v in values]}


# -- schemas: one per function of api/views.py ---------------------------------------------

_DOCUMENT_FIELDS: dict[str, Schema] = {
    "id": STRING,
    "collection": STRING,
    "filename": STRING,
    "status": _enum(Status),
    "attempts": INTEGER,
    "max_attempts": INTEGER,
    "current_stage": _null(STRING),
    "last_error": _null(STRING),
    "error_code": _null(STRING),
    "error_kind": {"type": ["string", "null"], "enum": [*(k.value for k in ErrorKind), None]},
    "chunk_count": INTEGER,
    "page_count": _null(INTEGER),
    "size_bytes": INTEGER,
    "content_type": STRING,
    "sha256": STRING,
    "not_before": _null(TIME),
    "lease": {
        "oneOf": [
            _object({"owner": STRING, "expires_at": _null(TIME)}),
            {"type": "null"},
        ]
    },
    "created_at": TIME,
    "updated_at": TIME,
    "started_at": _null(TIME),
    "completed_at": _null(TIME),
    "deleted_at": _null(TIME),
    "links": _object({"self": STRING, "collection": STRING, "retry": STRING}, optional=("retry",)),
}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {**STRING, "description": "Stable, for programs."},
                    "message": {**STRING, "description": "What happened and what to do."},
                }
            )
        }
    ),
    "Document": _object(_DOCUMENT_FIELDS),
    "DocumentWithHistory": _object({**_DOCUMENT_FIELDS, "history": _array(_ref("Attempt"))}),
    "Upload": _object({**_DOCUMENT_FIELDS, "duplicate": BOOLEAN}),
    "Attempt": _object(
        {
            "number": INTEGER,
            "worker": STRING,
            "started_at": TIME,
            "ended_at": _null(TIME),
            "duration_seconds": _null(NUMBER),
            "outcome": _enum(AttemptOutcome),
            "stage": _null(STRING),
            "error_code": _null(STRING),
            "error": _null(STRING),
            "stage_seconds": _map(NUMBER),
        }
    ),
    "DocumentPage": _object(
        {
            "documents": _array(_ref("Document")),
            "next_cursor": _null(STRING),
            "links": _object({"next": STRING}, optional=("next",)),
        }
    ),
    "SearchResults": _object(
        {
            "collection": STRING,
            "query": STRING,
            "mode": _enum(SearchMode),
            "model": STRING,
            "results": _array(
                _object(
                    {
                        "document_id": STRING,
                        "filename": STRING,
                        "chunk": INTEGER,
                        "pages": _array(INTEGER),
                        "score": NUMBER,
                        "rankings": {
                            "type": "object",
                            "description": "The 1-based rank of this chunk in each ranking "
                            'that found it, e.g. {"keyword": 3, "vector": 1}.',
                            "properties": {
                                "keyword": {"type": "integer", "minimum": 1},
                                "vector": {"type": "integer", "minimum": 1},
                            },
                            "additionalProperties": False,
                        },
                        "text": STRING,
                        "links": _object({"document": STRING}),
                    }
                )
            ),
        }
    ),
    "Stats": _object(
        {
            "counts": _map(INTEGER),
            "oldest_ready_age_seconds": _null(NUMBER),
            "leases_held": INTEGER,
        }
    ),
    "DeadLetter": _object(
        {
            "sequence_number": INTEGER,
            "message_id": STRING,
            "reason": _null(STRING),
            "description": _null(STRING),
            "delivery_count": INTEGER,
            "enqueued_at": _null(TIME),
            "document_id": _null(STRING),
            "collection": _null(STRING),
            "dispatch_seq": _null(INTEGER),
            "filename": _null(STRING),
            "document_status": {
                "type": ["string", "null"],
                "enum": [*(s.value for s in Status), None],
            },
            "problem": _null(STRING),
            "links": _object({"self": STRING, "document": STRING}, optional=("document",)),
        }
    ),
    "DeadLetterPage": _object(
        {"messages": _array(_ref("DeadLetter")), "limit": INTEGER, "more": BOOLEAN}
    ),
    "DeadLetterBatch": _object(
        {
            "dry_run": BOOLEAN,
            "results": _array(
                _object(
                    {
                        "sequence_number": INTEGER,
                        "message_id": STRING,
                        "reason": _null(STRING),
                        "document_id": _null(STRING),
                        "outcome": _enum(Outcome),
                        "detail": STRING,
                    }
                )
            ),
            "counts": _map(INTEGER),
            "not_found": _array(INTEGER),
        }
    ),
    "Health": _object(
        {
            "status": {"type": "string", "enum": ["ok", "unhealthy"]},
            "event_loop_lag_seconds": NUMBER,
            "error": STRING,
        },
        optional=("error",),
    ),
    "Readiness": _object(
        {
            "ready": BOOLEAN,
            "checks": _map(
                {
                    "type": "object",
                    "properties": {
                        "ok": BOOLEAN,
                        "error": STRING,
                        "mode": STRING,
                        "model": STRING,
                        "dimensions": INTEGER,
                    },
                    "required": ["ok"],
                    "additionalProperties": False,
                }
            ),
        }
    ),
    "CollectionList": _object(
        {
            "collections": _array(
                _object(
                    {
                        "name": STRING,
                        "documents": INTEGER,
                        "counts": _map(INTEGER),
                        "links": _object({"documents": STRING, "search": STRING}),
                    }
                )
            ),
            "complete": BOOLEAN,
        }
    ),
    "ChunkPage": _object(
        {
            "document_id": STRING,
            "total": INTEGER,
            "offset": INTEGER,
            "chunks": _array(
                _object(
                    {"ordinal": INTEGER, "page_start": INTEGER, "page_end": INTEGER, "text": STRING}
                )
            ),
        }
    ),
    "Dashboard": _object(
        {
            "generated_at": TIME,
            "window_seconds": NUMBER,
            "bucket_seconds": NUMBER,
            "throughput": _array(
                _object(
                    {"start": TIME, "completed": INTEGER, "failed": INTEGER, "retried": INTEGER}
                )
            ),
            "failures": _array(_object({"error_code": STRING, "count": INTEGER})),
            "stages": _array(
                _object(
                    {
                        "stage": STRING,
                        "count": INTEGER,
                        "p50_seconds": NUMBER,
                        "p95_seconds": NUMBER,
                    }
                )
            ),
            "queue": _array(
                _object(
                    {
                        "at": TIME,
                        "queued": INTEGER,
                        "processing": INTEGER,
                        "oldest_ready_age_seconds": _null(NUMBER),
                    }
                )
            ),
            "queue_sampled_since": _null(TIME),
            "workers": _array(
                _object(
                    {
                        "id": STRING,
                        "last_seen_at": TIME,
                        "last_heartbeat_at": _null(TIME),
                        "completed": INTEGER,
                        "failed": INTEGER,
                        "in_flight": _array(
                            _object(
                                {
                                    "id": STRING,
                                    "collection": STRING,
                                    "filename": STRING,
                                    "stage": _null(STRING),
                                    "started_at": TIME,
                                    "heartbeat_at": TIME,
                                    "lease_expires_at": _null(TIME),
                                }
                            )
                        ),
                    }
                )
            ),
            "complete": BOOLEAN,
        }
    ),
}

# -- responses and parameters ---------------------------------------------------------------

_ERRORS = {
    "400": "The request is invalid; `error.code` says how.",
    "401": "No credentials, or ones that do not verify (see WWW-Authenticate).",
    "403": "The caller may see this collection but lacks the scope the route needs.",
    "404": "No such resource visible to this caller.",
    "409": "The resource is not in a state that allows this.",
    "413": "The upload is larger than SHEAF_MAX_UPLOAD_BYTES.",
    "415": "The file is not PDF, DOCX or text (decided by its bytes).",
    "429": "Too many uploads by this caller; see Retry-After.",
    "503": "The database or blob store is unreachable; see Retry-After.",
}
_PROTECTED = ("400", "401", "403", "404", "503")


def _json(schema: str, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _responses(ok: dict[str, Schema], *errors: str, notes: dict[str, str] | None = None) -> Schema:
    """The success answers, and every error a protected route can give; `notes` replace
    the general description of an error where this route gives it for its own reason."""
    codes = sorted({*_PROTECTED, *errors})
    said = {**_ERRORS, **(notes or {})}
    return {**ok, **{code: _json("Error", said[code]) for code in codes}}


_NO_BUS = {
    "400": "Service Bus is not in use here (`error.code` is `no_dead_letter_queue`: "
    "SHEAF_MESSAGE_BUS=none), or the request is invalid."
}


def _path(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


COLLECTION = _path(
    "collection",
    "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
    {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
)
DOCUMENT_ID = _path("document_id", "The document's id (a UUID).")
LIMIT = _query("limit", "Page size (1-200; clamped).", INTEGER)
CURSOR = _query("cursor", "`next_cursor` of the previous page.", STRING)
PUBLIC: list[Schema] = []  # no security requirement
DOCUMENT_LINKS = {
    name: {"operationId": operation, "parameters": {"document_id": "$response.body#/id"}}
    for name, operation in [
        ("GetDocument", "getDocument"),
        ("DeleteDocument", "deleteDocument"),
        ("RetryDocument", "retryDocument"),
    ]
}


def _operation(summary: str, responses: Schema, **extra: Any) -> Schema:
    return {"summary": summary, "responses": responses, **extra}


def _dlq_body(flag: str, flag_doc: str) -> Schema:
    return {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "sequence_numbers": _array(INTEGER),
                        "reason": _null(STRING),
                        flag: {**BOOLEAN, "description": flag_doc},
                    },
                }
            }
        },
    }


PATHS: dict[str, Schema] = {
    "/v1/collections/{collection}/documents": {
        "parameters": [COLLECTION],
        "post": _operation(
            "Upload one file (multipart field `file`); the same bytes again are the same "
            "document. Needs `write`.",
            _responses(
                {
                    "202": {**_json("Upload", "Stored and queued."), "links": DOCUMENT_LINKS},
                    "200": {
                        **_json("Upload", "The same bytes are already in the collection."),
                        "links": DOCUMENT_LINKS,
                    },
                },
                "413",
                "415",
                "429",
            ),
            operationId="uploadDocument",
            requestBody={
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        },
                        "example": {"file": "Minutes of the audit committee, March 2025."},
                    }
                },
            },
        ),
        "get": _operation(
            "List a collection's documents, newest first. Needs `read`.",
            _responses({"200": _json("DocumentPage", "One page.")}),
            operationId="listDocuments",
            parameters=[
                _query(
                    "status",
                    "Only documents in this status (empty: any but deleted).",
                    {"type": "string", "enum": [*(s.value for s in Status), ""]},
                ),
                CURSOR,
                LIMIT,
            ],
        ),
    },
    "/v1/collections/{collection}/search": {
        "parameters": [COLLECTION],
        "get": _operation(
            "The chunks that best match a query, from completed documents: keyword (BM25) "
            "and vector (cosine) rankings fused by reciprocal rank (`hybrid`, the default), "
            "or one of them. `score` is the fused score, BM25 or cosine. A collection that no "
            "document was ever uploaded into answers 404 (`collection_not_found`). Needs `read`.",
            _responses({"200": _json("SearchResults", "Best first.")}),
            operationId="search",
            parameters=[
                {
                    "name": "q",
                    "in": "query",
                    "required": True,
                    "description": "Words to search for (not only spaces).",
                    "schema": {"type": "string", "pattern": "\\S"},
                },
                _query("k", "How many results (1-100; clamped).", INTEGER),
                _query(
                    "mode",
                    "hybrid (default): keyword and vector fused; vector; or keyword.",
                    _enum(SearchMode),
                ),
                {
                    **_query(
                        "document_id",
                        "Only chunks of these documents (repeat the parameter for several).",
                        _array(STRING),
                    ),
                    "style": "form",
                    "explode": True,
                },
                _query(
                    "filename",
                    "Only documents whose whole file name matches this pattern, "
                    "case-insensitively: * is any run of characters, ? any one character.",
                    STRING,
                ),
                _query(
                    "uploaded_from",
                    "Only documents uploaded at or after this ISO 8601 time (UTC without an "
                    "offset).",
                    TIME,
                ),
                _query(
                    "uploaded_to",
                    "Only documents uploaded at or before this ISO 8601 time (UTC without an "
                    "offset).",
                    TIME,
                ),
            ],
        ),
    },
    "/v1/documents/{document_id}": {
        "parameters": [DOCUMENT_ID],
        "get": _operation(
            "One document with its attempt history. Needs `read` on its collection.",
            _responses({"200": _json("DocumentWithHistory", "The document.")}),
            operationId="getDocument",
        ),
        "delete": _operation(
            "Delete (tombstone) a document; its blob and chunks go soon after. Needs `write`.",
            _responses({"202": _json("Document", "Marked deleted.")}),
            operationId="deleteDocument",
        ),
    },
    "/v1/documents/{document_id}/retry": {
        "parameters": [DOCUMENT_ID],
        "post": _operation(
            "Queue a failed document again with fresh attempts. Needs `write`.",
            _responses({"202": _json("Document", "Queued again.")}, "409"),
            operationId="retryDocument",
        ),
    },
    "/v1/stats": {
        "get": _operation(
            "Document counts across every collection. Needs `admin` over `*`.",
            _responses({"200": _json("Stats", "Counts.")}),
            operationId="stats",
        )
    },
    "/v1/admin/failed": {
        "get": _operation(
            "Failed documents of every collection. Needs `admin` over `*`.",
            _responses({"200": _json("DocumentPage", "One page.")}),
            operationId="listFailed",
            parameters=[CURSOR, LIMIT],
        )
    },
    "/v1/admin/dlq": {
        "get": _operation(
            "Dead-lettered messages, oldest first (Service Bus only). Needs `admin` over `*`.",
            _responses({"200": _json("DeadLetterPage", "One page.")}, notes=_NO_BUS),
            operationId="listDeadLetters",
            parameters=[_query("reason", "Only this dead-letter reason.", STRING), LIMIT],
        )
    },
    "/v1/admin/dlq/resubmit": {
        "post": _operation(
            "Re-drive failed documents from their dead-lettered messages. Needs `admin`.",
            _responses(
                {"200": _json("DeadLetterBatch", "What happened to each message.")}, notes=_NO_BUS
            ),
            operationId="resubmitDeadLetters",
            requestBody=_dlq_body("dry_run", "Say what would happen; change nothing."),
        )
    },
    "/v1/admin/dlq/purge": {
        "post": _operation(
            "Remove dead-lettered messages for good. Needs `admin`.",
            _responses({"200": _json("DeadLetterBatch", "What was removed.")}, notes=_NO_BUS),
            operationId="purgeDeadLetters",
            requestBody=_dlq_body("confirm", "Must be true to remove anything."),
        )
    },
    "/v1/admin/dlq/{sequence_number}": {
        "parameters": [_path("sequence_number", "The message's sequence number.", INTEGER)],
        "get": _operation(
            "One dead-lettered message. Needs `admin` over `*`.",
            _responses({"200": _json("DeadLetter", "The message.")}, notes=_NO_BUS),
            operationId="getDeadLetter",
        ),
    },
    "/v1/documents/{document_id}/chunks": {
        "parameters": [DOCUMENT_ID],
        "get": _operation(
            "A document's live chunks in order, with their pages: its text as indexed "
            "(neighbouring chunks overlap by SHEAF_CHUNK_OVERLAP). Needs `read`.",
            _responses({"200": _json("ChunkPage", "One page of chunks.")}),
            operationId="listChunks",
            parameters=[
                _query("offset", "Chunks to skip (default 0).", INTEGER),
                _query("limit", "How many (1-500; clamped; default 100).", INTEGER),
            ],
        ),
    },
    "/v1/documents/{document_id}/content": {
        "parameters": [DOCUMENT_ID],
        "get": _operation(
            "The file as it was uploaded, as an attachment. Needs `read`.",
            _responses(
                {
                    "200": {
                        "description": "The original bytes, with the detected content type.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    }
                }
            ),
            operationId="downloadDocument",
        ),
    },
    "/v1/admin/dashboard": {
        "get": _operation(
            "The operator's dashboard over a recent window: documents completed and failed "
            "over time, failures by error code, per-stage p50/p95, the queue over time and "
            "the workers at work. Needs `admin` over `*`.",
            _responses({"200": _json("Dashboard", "The window, oldest point first.")}),
            operationId="dashboard",
            parameters=[
                _query(
                    "window",
                    "The window in seconds (10-86400; clamped; default 900).",
                    INTEGER,
                )
            ],
        )
    },
    "/v1/collections": {
        "get": _operation(
            "The collections in use that the caller may see (for the console).",
            _responses({"200": _json("CollectionList", "Sorted by name.")}),
            operationId="listCollections",
        )
    },
    "/healthz": {
        "get": _operation(
            "Liveness: the event loop is responsive.",
            {
                "200": _json("Health", "Healthy."),
                "503": _json("Health", "Unhealthy: restart me."),
            },
            operationId="healthz",
            security=PUBLIC,
        )
    },
    "/readyz": {
        "get": _operation(
            "Readiness: database and blob store reachable.",
            {
                "200": _json("Readiness", "Ready."),
                "503": _json("Readiness", "Not ready; `checks` says why."),
            },
            operationId="readyz",
            security=PUBLIC,
        )
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics.",
            {
                "200": {
                    "description": "Text exposition format.",
                    "content": {"text/plain": {"schema": STRING}},
                }
            },
            operationId="metrics",
            security=PUBLIC,
        )
    },
    "/openapi.json": {
        "get": _operation(
            "This document.",
            {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
            operationId="openapi",
            security=PUBLIC,
        )
    },
}


def document(*, auth: bool = True) -> dict[str, Any]:
    """The whole OpenAPI document (built once per mode; callers must not change it).

    `auth=False` describes a server with SHEAF_AUTH_MODE=none: no operation asks for
    credentials, and none answers 401 or 403."""
    return _document(auth)


@functools.cache
def _document(auth: bool) -> dict[str, Any]:
    how = (
        "Every /v1 route takes `Authorization: Bearer <API key or Entra ID token>` "
        "(see docs/security.md)."
        if auth
        else "Authentication is off on this server (SHEAF_AUTH_MODE=none): no route asks "
        "for credentials."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sheaf",
            "version": "1",
            "description": f"Document ingestion: upload, track and search documents. {how}",
        },
        "security": [{"bearer": []}] if auth else [],
        "paths": PATHS if auth else _without_auth(PATHS),
        "components": {"schemas": SCHEMAS, **({"securitySchemes": SCHEMES} if auth else {})},
    }


SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A Sheaf API key (sk_sheaf_…) or an Entra ID access token.",
    }
}


_AUTH_ERRORS = ("401", "403")


def _without_auth(paths: dict[str, Any]) -> dict[str, Any]:
    """The paths with no 401 or 403 answers: nobody is refused for their credentials."""
    return {
        path: {
            method: (
                {
                    **op,
                    "responses": {
                        k: v for k, v in op["responses"].items() if k not in _AUTH_ERRORS
                    },
                }
                if isinstance(op, dict) and "responses" in op
                else op
            )
            for method, op in item.items()
        }
        for path, item in paths.items()
    }
