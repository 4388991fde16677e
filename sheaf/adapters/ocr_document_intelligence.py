"""OCR on Azure: Azure AI Document Intelligence (`prebuilt-layout`) as the `Extractor` port.

Which pages go to the service: every page of an image (PNG, JPEG, TIFF), and only the
PDF pages that the local extractor found no text on (its `pages` parameter names them,
so a mixed PDF is billed for its scans alone; page numbers stay the PDF's). Everything
else, and the text layers, come from the wrapped local extractor (the isolated children
with local OCR turned off). Tables come back as Markdown rows (`| a | b |`) after the
page's other lines, so a search matches them, and their cells are not repeated as lines.

The SDK's async client runs on the process's event loop with the shared Azure identity
(or a key); `extract` is called from a worker thread (`asyncio.to_thread`, as the
processing service does) and blocks only that thread. The SDK submits the file, polls
`Operation-Location` honouring `Retry-After`, and retries 429 and 5xx with backoff
(`RETRIES` times); what is left is translated here:

    429, 5xx after retries; network errors    TransientError ocr_service_unavailable
    401, 403, or no token                      TransientError ocr_service_auth
    no answer within timeout_seconds           TransientError ocr_service_timeout
    400 (the service refuses the file)         ExtractionError ocr_rejected
    the analysis itself failed                 ExtractionError ocr_failed
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from azure.ai.documentintelligence.aio import DocumentIntelligenceClient
from azure.ai.documentintelligence.models import AnalyzeResult, DocumentTable
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError, TransientError
from sheaf.ports import Extractor

RETRIES = 3
_IMAGES = frozenset({ContentType.PNG, ContentType.JPEG, ContentType.TIFF})
T = TypeVar("T")


class DocumentIntelligenceExtractor:
    """The `Extractor` port: local text layers, Document Intelligence for the rest."""

    def __init__(
        self,
        inner: Extractor,
        client: DocumentIntelligenceClient,
        loop: asyncio.AbstractEventLoop,
        *,
        model: str = "prebuilt-layout",
        timeout_seconds: float = 120.0,
    ) -> None:
        self._inner = inner
        self._client = client
        self._loop = loop
        self.model = model
        self.timeout_seconds = timeout_seconds

    @classmethod
    def create(
        cls,
        inner: Extractor,
        endpoint: str,
        credential: AsyncTokenCredential | AzureKeyCredential,
        **options: Any,
    ) -> DocumentIntelligenceExtractor:
        """Build on the running event loop (the composition root's)."""
        client = DocumentIntelligenceClient(
            endpoint, credential, retry_total=RETRIES, retry_backoff_factor=0.5
        )
        return cls(inner, client, asyncio.get_running_loop(), **options)

    def extract(self, path: Path, content_type: str) -> Iterator[Page]:
        """Pages of text; iterate from a thread other than the event loop's.

        A PDF's pages are gathered before the one request for those without text (pages in
        order, one analysis per document), so this adapter holds a document's text layer
        in memory; `SHEAF_DOCUMENT_MAX_BYTES` and `SHEAF_DOCUMENT_MAX_PAGES` bound it.
        """
        if content_type in _IMAGES:
            read = self._on_loop(self.analyze(path.read_bytes(), None))
            yield from (Page(number, text) for number, text in sorted(read.items()))
            return
        if content_type != ContentType.PDF:
            yield from self._inner.extract(path, content_type)
            return
        pages = list(self._inner.extract(path, content_type))
        missing = [page.number for page in pages if not page.text.strip()]
        if not missing:
            yield from pages
            return
        read = self._on_loop(self.analyze(path.read_bytes(), missing))
        yield from (Page(page.number, read.get(page.number, page.text)) for page in pages)

    async def analyze(self, data: bytes, pages: Sequence[int] | None) -> dict[int, str]:
        """Text by page number of `data` (all pages, or only `pages`)."""
        try:
            poller = await self._client.begin_analyze_document(
                self.model,
                io.BytesIO(data),
                pages=None if pages is None else ",".join(map(str, pages)),
                string_index_type="unicodeCodePoint",
                content_type="application/octet-stream",
            )
            result = await asyncio.wait_for(poller.result(), self.timeout_seconds)
        except TimeoutError as exc:
            raise TransientError(
                f"Document Intelligence did not finish within {self.timeout_seconds:g} s; "
                "the document will be retried.",
                code="ocr_service_timeout",
            ) from exc
        except ClientAuthenticationError as exc:
            raise _auth(exc) from exc
        except HttpResponseError as exc:
            raise _translate(exc) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _unavailable(str(exc)) from exc
        return pages_text(result)

    async def close(self) -> None:
        await self._client.close()

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the client's loop and wait here (a worker thread) for the result."""
        with contextlib.suppress(RuntimeError):  # no loop in this thread: the usual case
            if asyncio.get_running_loop() is self._loop:
                coroutine.close()
                raise AssertionError("extract blocks: call it from a worker thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def pages_text(result: AnalyzeResult) -> dict[int, str]:
    """Each page's lines outside tables, then its tables as Markdown rows."""
    tables = list(result.tables or [])
    in_tables = [(span.offset, span.offset + span.length) for t in tables for span in t.spans]
    text: dict[int, list[str]] = {}
    for page in result.pages or []:
        text[page.page_number] = [
            line.content
            for line in page.lines or []
            if not any(_inside(span.offset, in_tables) for span in line.spans)
        ]
    for table in tables:
        number = table.bounding_regions[0].page_number if table.bounding_regions else 1
        text.setdefault(number, []).extend(markdown_rows(table))
    return {number: "\n".join(lines) for number, lines in text.items()}


def markdown_rows(table: DocumentTable) -> list[str]:
    """The table as Markdown: a row per line, a separator under the first row."""
    grid = [[""] * table.column_count for _ in range(table.row_count)]
    for cell in table.cells:
        grid[cell.row_index][cell.column_index] = " ".join(cell.content.split())
    rows = ["| " + " | ".join(row) + " |" for row in grid]
    return [*rows[:1], "|" + " --- |" * table.column_count, *rows[1:]]


def _inside(offset: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(start <= offset < end for start, end in spans)


def _translate(exc: HttpResponseError) -> Exception:
    status = exc.status_code or 0
    detail = (exc.message or str(exc))[:300]
    if status in (401, 403):
        return _auth(exc)
    if status == 429 or status >= 500:
        return _unavailable(f"HTTP {status}: {detail}")
    if status == 400:
        return ExtractionError(
            f"Document Intelligence refused the file ({detail}). It may be damaged or in a "
            "format the service does not read: re-export it and upload it again.",
            code="ocr_rejected",
        )
    return ExtractionError(
        f"Document Intelligence could not analyse the document ({detail}). Re-scan or "
        "re-export it and upload it again.",
        code="ocr_failed",
    )


def _auth(exc: Exception) -> TransientError:
    return TransientError(
        f"Document Intelligence refused Sheaf's credentials ({str(exc)[:200]}). Give the "
        "workers' identity the 'Cognitive Services User' role on the resource, or set "
        "SHEAF_AZURE_DOCUMENT_INTELLIGENCE_KEY.",
        code="ocr_service_auth",
    )


def _unavailable(detail: str) -> TransientError:
    return TransientError(
        f"Document Intelligence is unavailable or busy ({detail[:300]}); the document "
        "will be retried.",
        code="ocr_service_unavailable",
    )
