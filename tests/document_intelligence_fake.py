"""A fake Azure AI Document Intelligence on 127.0.0.1, for tests with the unmodified SDK.

It serves the REST shape the SDK speaks (API 2024-11-30): `POST .../documentModels/
{model}:analyze` answers 202 with an `Operation-Location`, and `GET` on that location
answers `running` once, then `succeeded` with an `analyzeResult` (or `failed`). The
result holds the pages of `self.pages` that were asked for (all, or the `pages`
query parameter's list, as the real service does), each line of a page's text as a
`line` with its span in `content`, and `self.tables` as tables whose cells are also lines
inside the table's span, like the real layout model reports them.

Faults are scripted per request: `fail_next(Fault(...))` answers the next submission
with a status and headers (429 with `Retry-After`, 5xx), or makes its analysis end
`failed`, or never finish (`hang`). Every request is recorded with its time.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

KEY = "fake-document-intelligence-key"


@dataclass(frozen=True, slots=True)
class Fault:
    status: int = 0  # answer the submission with this status (and headers)...
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = ""  # ...or let it run and end "failed", or "hang" forever


@dataclass(slots=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    at: float
    body_size: int = 0


class FakeDocumentIntelligence:
    def __init__(self) -> None:
        self.pages: dict[int, str] = {}
        self.tables: list[tuple[int, list[list[str]]]] = []  # (page, rows of cells)
        self.requests: list[Recorded] = []
        self._faults: deque[Fault] = deque()
        self._operations: dict[str, tuple[str, dict[str, Any] | None]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, fault: Fault, times: int = 1) -> None:
        self._faults.extend([fault] * times)

    def submissions(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_post("/documentintelligence/documentModels/{model}", self._submit)
        app.router.add_get(
            "/documentintelligence/documentModels/{model}/analyzeResults/{id}", self._poll
        )
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(request, len(body))
        if request.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            return _error(401, "401", "Access denied due to invalid subscription key.")
        if not request.match_info["model"].endswith(":analyze"):
            return _error(404, "NotFound", "Resource not found.")
        fault = self._faults.popleft() if self._faults else Fault()
        if fault.status:
            return _error(fault.status, str(fault.status), "scripted", fault.headers)
        operation = str(next(self._ids))
        pages = request.query.get("pages")
        result = None if fault.outcome else self._result(pages)
        self._operations[operation] = (fault.outcome or "succeeded", result)
        model = request.match_info["model"].removesuffix(":analyze")
        location = (
            f"{self.url}/documentintelligence/documentModels/{model}/analyzeResults/"
            f"{operation}?api-version={request.query.get('api-version')}"
        )
        return web.Response(
            status=202, headers={"Operation-Location": location, "Retry-After": "0"}
        )

    async def _poll(self, request: web.Request) -> web.Response:
        self._record(request, 0)
        outcome, result = self._operations[request.match_info["id"]]
        polls = sum(1 for r in self.requests if r.path == request.path)
        if outcome == "hang" or polls == 1:  # every analysis is seen running at least once
            return web.json_response({"status": "running"}, headers={"Retry-After": "0"})
        if outcome == "failed":
            error = {
                "code": "InvalidContent",
                "message": "The file is corrupted or format is unsupported.",
            }
            return web.json_response({"status": "failed", "error": error})
        return web.json_response({"status": "succeeded", "analyzeResult": result})

    def _record(self, request: web.Request, size: int) -> None:
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), time.monotonic(), size)
        )

    def _result(self, pages: str | None) -> dict[str, Any]:
        wanted = sorted(self.pages) if pages is None else [int(p) for p in pages.split(",")]
        content = ""
        result_pages = []
        tables = []
        for number in wanted:
            lines = []
            for line in self.pages.get(number, "").split("\n"):
                lines.append(_line(line, len(content)))
                content += line + "\n"
            for page, rows in self.tables:
                if page == number:
                    start = len(content)
                    cells = []
                    for r, row in enumerate(rows):
                        for c, text in enumerate(row):
                            lines.append(_line(text, len(content)))
                            cells.append({"rowIndex": r, "columnIndex": c, "content": text})
                            content += text + "\n"
                    tables.append(
                        {
                            "rowCount": len(rows),
                            "columnCount": len(rows[0]),
                            "cells": cells,
                            "boundingRegions": [{"pageNumber": number, "polygon": []}],
                            "spans": [{"offset": start, "length": len(content) - start}],
                        }
                    )
            result_pages.append({"pageNumber": number, "spans": [], "lines": lines})
        return {
            "apiVersion": "2024-11-30",
            "modelId": "prebuilt-layout",
            "content": content,
            "pages": result_pages,
            "tables": tables,
        }


def _line(text: str, offset: int) -> dict[str, Any]:
    return {"content": text, "polygon": [], "spans": [{"offset": offset, "length": len(text)}]}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers or {})


@pytest.fixture
async def document_intelligence() -> AsyncIterator[FakeDocumentIntelligence]:
    server = FakeDocumentIntelligence()
    await server.start()
    try:
        yield server
    finally:
        await server.close()
