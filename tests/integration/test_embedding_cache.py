"""The embedding cache and embedding failures, end to end through `process_document`.

The real OpenAI embedder talks to the local fake server, so every claim below is checked
on the requests the server actually received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from sheaf.adapters.embed_openai import openai_compatible_embedder
from sheaf.domain.models import Status
from sheaf.services import housekeeping
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from tests.openai_fake import FakeOpenAI, Fault, openai_fake_fixture  # noqa: F401
from tests.samples import make_pdf
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.integration

PAGES = [
    f"Section {n}: the inspection of bridge pillar {n} found {n * 3} hairline cracks, "
    f"each measured and photographed; repairs to pillar {n} are scheduled for week {n + 10}."
    for n in range(1, 7)
]


@pytest.fixture
async def deps(openai_fake: FakeOpenAI) -> AsyncIterator[Deps]:
    embedder = openai_compatible_embedder(f"{openai_fake.url}/v1", "fake-embed", 32)
    yield dataclasses.replace(make_deps(chunk_size=200, embed_batch_size=4), embedder=embedder)
    await embedder.close()


async def ingest(deps: Deps, pages: list[str], collection: str = "bridges") -> str:
    async def body() -> AsyncIterator[bytes]:
        yield make_pdf(pages)

    document = (await accept_upload(deps, collection, "report.pdf", body())).document
    [lease] = await deps.store.claim_queued_documents("w", 30, 1)
    await process_document(deps, lease)
    return document.id


def embedded(server: FakeOpenAI) -> list[str]:
    return [text for request in server.answered() for text in request.inputs]


async def test_unchanged_text_is_never_embedded_twice(deps: Deps, openai_fake: FakeOpenAI) -> None:
    first = await ingest(deps, PAGES)
    sent = embedded(openai_fake)
    assert len(sent) == len(PAGES)  # one chunk per page
    # A new file (other bytes: a different producer) with the same text embeds nothing.
    second = await ingest(deps, [*PAGES, ""])
    assert embedded(openai_fake) == sent
    for document_id in (first, second):
        doc = await deps.store.get_document(document_id)
        assert doc is not None
        assert (doc.status, doc.chunk_count) == (Status.COMPLETED, len(PAGES))


async def test_a_changed_paragraph_embeds_only_its_chunk(
    deps: Deps, openai_fake: FakeOpenAI
) -> None:
    await ingest(deps, PAGES)
    before = len(embedded(openai_fake))
    edited = [*PAGES]
    edited[3] = PAGES[3].replace("hairline cracks", "hairline cracks and one spall")
    await ingest(deps, edited)
    new = embedded(openai_fake)[before:]
    assert len(new) == 1
    assert "one spall" in new[0]


async def test_the_cache_is_scoped_to_the_collection(deps: Deps, openai_fake: FakeOpenAI) -> None:
    await ingest(deps, PAGES, collection="a")
    await ingest(deps, PAGES, collection="b")
    assert len(embedded(openai_fake)) == 2 * len(PAGES)


async def test_deleting_a_document_purges_its_cached_vectors(
    deps: Deps, openai_fake: FakeOpenAI
) -> None:
    first = await ingest(deps, PAGES)
    await deps.store.delete_document(first)
    await housekeeping.clean(deps)
    await ingest(deps, PAGES)
    assert len(embedded(openai_fake)) == 2 * len(PAGES)


async def test_a_rejected_input_fails_the_document_with_the_apis_message(
    deps: Deps, openai_fake: FakeOpenAI
) -> None:
    openai_fake.fail_next(Fault.reject("Input contains a forbidden token sequence"))
    document_id = await ingest(deps, PAGES)
    doc = await deps.store.get_document(document_id)
    assert doc is not None
    assert (doc.status, doc.error_code, doc.attempts) == (Status.FAILED, "embedding_rejected", 1)
    assert doc.last_error is not None
    assert "forbidden token sequence" in doc.last_error
