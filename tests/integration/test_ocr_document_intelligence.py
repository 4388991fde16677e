"""Document Intelligence with the unmodified SDK against the local fake service: which
pages are sent, tables as Markdown rows, and every way the service can fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from azure.core.credentials import AzureKeyCredential

from sheaf.adapters.ocr_document_intelligence import RETRIES, DocumentIntelligenceExtractor
from sheaf.bootstrap import migrate, open_deps
from sheaf.config import Settings
from sheaf.domain.models import ContentType, Page
from sheaf.errors import ConfigError, ExtractionError, SheafError, TransientError
from sheaf.extract import LocalExtractor, OcrOptions
from tests.document_intelligence_fake import KEY, FakeDocumentIntelligence, Fault
from tests.document_intelligence_fake import document_intelligence as document_intelligence
from tests.samples import make_image, make_scanned_pdf

pytestmark = pytest.mark.integration

Make = Callable[..., DocumentIntelligenceExtractor]
LOCAL = LocalExtractor(ocr=OcrOptions(enabled=False))  # text layers only, as in production


@pytest.fixture
async def make(document_intelligence: FakeDocumentIntelligence) -> AsyncIterator[Make]:
    made: list[DocumentIntelligenceExtractor] = []

    def build(key: str = KEY, **options: float) -> DocumentIntelligenceExtractor:
        made.append(
            DocumentIntelligenceExtractor.create(
                LOCAL, document_intelligence.url, AzureKeyCredential(key), **options
            )
        )
        return made[-1]

    yield build
    for extractor in made:
        await extractor.close()


async def extract(
    extractor: DocumentIntelligenceExtractor, tmp_path: Path, data: bytes, kind: ContentType
) -> list[Page]:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return await asyncio.to_thread(lambda: list(extractor.extract(path, kind)))


async def failure(
    extractor: DocumentIntelligenceExtractor, tmp_path: Path, kind: type[SheafError]
) -> SheafError:
    with pytest.raises(kind) as caught:
        await extract(extractor, tmp_path, make_image(["x"]), ContentType.PNG)
    return caught.value


async def test_an_image_is_read_by_the_service(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.pages = {1: "Harbour inspection\nfound rust"}
    pages = await extract(make(), tmp_path, make_image(["x"]), ContentType.PNG)
    assert pages == [Page(1, "Harbour inspection\nfound rust")]
    [submitted] = document_intelligence.submissions()
    assert submitted.path.endswith("/prebuilt-layout:analyze")
    assert "pages" not in submitted.query


async def test_only_the_pages_without_text_of_a_pdf_are_sent(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.pages = {1: "scan one", 2: "never asked for", 3: "scan three"}
    data = make_scanned_pdf(["first", "Typed middle page", "third"], typed={2})
    pages = await extract(make(), tmp_path, data, ContentType.PDF)
    assert pages == [Page(1, "scan one"), Page(2, "Typed middle page"), Page(3, "scan three")]
    [submitted] = document_intelligence.submissions()
    assert submitted.query["pages"] == "1,3"


async def test_a_pdf_with_text_everywhere_is_never_sent(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    data = make_scanned_pdf(["Typed only"], typed={1})
    assert await extract(make(), tmp_path, data, ContentType.PDF) == [Page(1, "Typed only")]
    assert document_intelligence.requests == []


async def test_tables_become_markdown_rows_once(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.pages = {1: "Pier survey"}
    document_intelligence.tables = [(1, [["Pier", "State"], ["North", "rust"]])]
    [page] = await extract(make(), tmp_path, make_image(["x"]), ContentType.PNG)
    assert page.text == "Pier survey\n| Pier | State |\n| --- | --- |\n| North | rust |"


async def test_429_is_retried_after_the_time_it_asks_for(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.pages = {1: "after the wait"}
    document_intelligence.fail_next(Fault(429, {"Retry-After": "1"}))
    pages = await extract(make(), tmp_path, make_image(["x"]), ContentType.PNG)
    assert pages == [Page(1, "after the wait")]
    first, second = document_intelligence.submissions()
    assert second.at - first.at >= 1.0


async def test_5xx_after_the_sdk_retries_is_transient(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.fail_next(Fault(503), times=RETRIES + 1)
    error = await failure(make(), tmp_path, TransientError)
    assert error.code == "ocr_service_unavailable"
    assert len(document_intelligence.submissions()) == RETRIES + 1


async def test_a_failed_analysis_fails_the_document(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.fail_next(Fault(outcome="failed"))
    error = await failure(make(), tmp_path, ExtractionError)
    assert error.code == "ocr_failed"
    assert "corrupted" in error.message


async def test_an_analysis_that_never_ends_times_out_as_transient(
    make: Make, document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    document_intelligence.fail_next(Fault(outcome="hang"))
    started = time.monotonic()
    error = await failure(make(timeout_seconds=1.0), tmp_path, TransientError)
    assert error.code == "ocr_service_timeout"
    assert time.monotonic() - started < 5


async def test_a_wrong_key_is_an_auth_error(make: Make, tmp_path: Path) -> None:
    error = await failure(make(key="wrong"), tmp_path, TransientError)
    assert error.code == "ocr_service_auth"
    assert "SHEAF_AZURE_DOCUMENT_INTELLIGENCE_KEY" in error.message


def settings(tmp_path: Path, **values: str) -> Settings:
    db = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    return Settings.from_env({"SHEAF_DATABASE_URL": db, **values})


async def test_settings_alone_choose_document_intelligence(
    document_intelligence: FakeDocumentIntelligence, tmp_path: Path
) -> None:
    chosen = settings(
        tmp_path,
        SHEAF_BLOB_DIR=str(tmp_path / "blobs"),
        SHEAF_OCR_ENGINE="azure-document-intelligence",
        SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT=document_intelligence.url,
        SHEAF_AZURE_DOCUMENT_INTELLIGENCE_KEY=KEY,
    )
    document_intelligence.pages = {1: "chosen by settings"}
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        assert isinstance(deps.extractor, DocumentIntelligenceExtractor)
        path = tmp_path / "scan.png"
        path.write_bytes(make_image(["x"]))
        pages = await asyncio.to_thread(lambda: list(deps.extractor.extract(path, ContentType.PNG)))
    assert pages == [Page(1, "chosen by settings")]


def test_document_intelligence_needs_an_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT"):
        settings(tmp_path, SHEAF_OCR_ENGINE="azure-document-intelligence")
    keyless = settings(
        tmp_path,
        SHEAF_OCR_ENGINE="azure-document-intelligence",
        SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT="https://x.cognitiveservices.azure.com/",
    )
    assert keyless.needs_azure_credential  # signed in with the shared Azure identity
