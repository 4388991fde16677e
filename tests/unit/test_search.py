"""Hybrid search: reciprocal-rank fusion, the search service on the fakes, and its API."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner, Result

from api.app import create_app
from sheaf.cli import main
from sheaf.domain.models import (
    Chunk,
    Completion,
    Document,
    EmbeddedChunk,
    NewDocument,
    SearchFilter,
    SearchHit,
    SearchMode,
)
from sheaf.domain.search import (
    MAX_TERM_WEIGHT,
    RRF_K,
    bm25_rank,
    fuse,
    glob_to_like,
    glob_to_regex,
    query_terms,
    ranked,
)
from sheaf.errors import ClientError
from sheaf.services import search as searching
from sheaf.services.deps import Deps

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def hit(document: str, chunk: int, score: float = 1.0) -> SearchHit:
    return SearchHit(document, f"{document}.txt", chunk, 1, 1, score, f"{document}/{chunk}")


def keys(hits: Sequence[SearchHit]) -> list[tuple[str, int]]:
    return [(h.document_id, h.chunk_ordinal) for h in hits]


# -- fusion -------------------------------------------------------------------------------


def test_fusion_ranks_by_reciprocal_rank_and_records_each_ranking() -> None:
    vector = [hit("a", 0), hit("b", 0), hit("c", 0)]
    keyword = [hit("c", 0), hit("d", 0), hit("a", 0)]
    fused = fuse({"vector": vector, "keyword": keyword}, 10)
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (tied: vector's order decides), b: 1/62, d: 1/62
    assert keys(fused) == [("a", 0), ("c", 0), ("b", 0), ("d", 0)]
    assert [h.rankings for h in fused] == [
        {"vector": 1, "keyword": 3},
        {"vector": 3, "keyword": 1},
        {"vector": 2},
        {"keyword": 2},
    ]
    assert fused[0].score == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))
    assert fused[2].score == pytest.approx(1 / (RRF_K + 2))
    assert fused[0].text == "a/0"  # the hit itself is kept


def test_fusion_prefers_agreement_over_one_first_place() -> None:
    vector = [hit("solo", 0), *(hit(f"v{n}", 0) for n in range(3)), hit("both", 0)]
    keyword = [hit("k0", 0), hit("both", 0)]
    assert keys(fuse({"vector": vector, "keyword": keyword}, 1)) == [("both", 0)]


def test_fusion_keeps_k_and_tells_chunks_of_one_document_apart() -> None:
    vector = [hit("a", 0), hit("a", 1), hit("a", 2)]
    assert keys(fuse({"vector": vector, "keyword": []}, 2)) == [("a", 0), ("a", 1)]
    assert fuse({"vector": vector, "keyword": []}, 0) == []
    assert fuse({"vector": [], "keyword": []}, 5) == []


def test_a_ranking_that_names_a_chunk_twice_counts_its_best_rank() -> None:
    fused = fuse({"keyword": [hit("a", 0), hit("a", 0)]}, 5)
    assert [(h.rankings, h.score) for h in fused] == [({"keyword": 1}, 1 / (RRF_K + 1))]


def test_single_rankings_number_their_hits() -> None:
    assert [h.rankings for h in ranked("keyword", [hit("a", 0), hit("b", 0)])] == [
        {"keyword": 1},
        {"keyword": 2},
    ]


def test_query_words_and_filename_patterns() -> None:
    # Each distinct word once, in order, with how often the query says it.
    assert query_terms("The harbour's CRANE, the crane!") == {"harbour": 1, "s": 1, "crane": 2}
    assert list(query_terms("pear fig pear")) == ["pear", "fig"]
    assert query_terms("spam " * 50) == {"spam": MAX_TERM_WEIGHT}
    # Stop words carry no topic: a rare one must not outrank the words that do...
    assert query_terms("Where can I buy fresh bread?") == {"buy": 1, "fresh": 1, "bread": 1}
    # ...unless the query is nothing else.
    assert query_terms("To be, or not to be") == {"to": 2, "be": 2, "or": 1, "not": 1}
    assert query_terms(" ?! ") == {}
    assert glob_to_like("a*b?c%d_e[f\\") == "a%b_c\\%d\\_e\\[f\\\\"
    assert glob_to_regex("*.PDF").fullmatch("annual report.pdf")
    assert not glob_to_regex("report").fullmatch("report.pdf")
    assert not glob_to_regex("a.c").fullmatch("abc")  # a dot is a dot


def test_bm25_weighs_a_word_by_how_often_the_query_says_it() -> None:
    """Query term frequency, as Okapi BM25 and rank_bm25 count it: two chunks alike but
    for which of two equally rare words they hold; the word said twice wins."""
    texts = {1: "alpha report", 2: "omega report", 3: "other things", 4: "more things"}
    assert [key for key, _ in bm25_rank(texts, query_terms("alpha omega omega"), 4, 12.0)] == [
        2,
        1,
    ]
    assert [key for key, _ in bm25_rank(texts, query_terms("alpha alpha omega"), 4, 12.0)] == [
        1,
        2,
    ]
    (_, once), _ = bm25_rank(texts, {"alpha": 1, "omega": 1}, 4, 12.0)
    (_, twice), _ = bm25_rank(texts, {"alpha": 2, "omega": 1}, 4, 12.0)
    assert twice == pytest.approx(2 * once)


# -- the service on the fakes -------------------------------------------------------------


async def indexed(deps: Deps, collection: str, filename: str, *texts: str) -> Document:
    """A completed document with these chunk texts, embedded by the deps' embedder."""
    document_id = str(uuid.uuid4())
    new = NewDocument(
        id=document_id,
        collection=collection,
        filename=filename,
        content_type="text/plain",
        size_bytes=1,
        sha256=hashlib.sha256(document_id.encode()).hexdigest(),
        blob_key=f"k/{document_id}",
        max_attempts=3,
    )
    document, _ = await deps.store.create_document(new)
    result = await deps.store.acquire_document_lease(document.id, "w", 30.0)
    assert result.lease is not None
    vectors = await deps.embedder.embed(list(texts))
    model = deps.embedder.model
    chunks = [
        EmbeddedChunk(Chunk(i, t, 1, 1), v, model)
        for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
    ]
    await deps.store.write_chunks(result.lease, chunks)
    await deps.store.complete(
        result.lease, Completion(1, len(chunks), {}, model, deps.embedder.dimensions)
    )
    return document


class NoEmbedder:
    """An embedder that must not be called (keyword mode needs no vector)."""

    model = "none"
    dimensions = 3

    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        raise AssertionError("keyword search embedded the query")

    async def close(self) -> None:
        return None


async def test_hybrid_search_fuses_both_rankings(deps: Deps) -> None:
    doc = await indexed(
        deps,
        "c",
        "a.txt",
        "cranes lift containers in the harbour",
        "the quarterly budget of the port authority",
        "misfits",
    )
    hits = await searching.search(deps, "c", "misfits", 3)
    assert keys(hits)[0] == (doc.id, 2)
    assert hits[0].rankings == {"vector": 1, "keyword": 1}
    assert all("vector" in h.rankings for h in hits)  # vector ranks every chunk
    keyword = await searching.search(deps, "c", "misfits", 3, SearchMode.KEYWORD)
    assert [(keys(keyword), h.rankings) for h in keyword] == [([(doc.id, 2)], {"keyword": 1})]
    vector = await searching.search(deps, "c", "misfits", 3, SearchMode.VECTOR)
    assert [h.rankings for h in vector] == [{"vector": 1}, {"vector": 2}, {"vector": 3}]


async def test_keyword_mode_does_not_embed_the_query(deps: Deps) -> None:
    doc = await indexed(deps, "c", "a.txt", "harbour crane")
    keyword_only = dataclasses.replace(deps, embedder=NoEmbedder())
    hits = await searching.search(keyword_only, "c", "crane", 5, SearchMode.KEYWORD)
    assert keys(hits) == [(doc.id, 0)]


async def test_filters_reach_both_rankings(deps: Deps) -> None:
    report = await indexed(deps, "c", "Report.pdf", "harbour crane report")
    await indexed(deps, "c", "notes.txt", "harbour crane notes")
    for mode in SearchMode:
        hits = await searching.search(
            deps, "c", "harbour crane", 5, mode, SearchFilter(filename="*.pdf")
        )
        assert {h.document_id for h in hits} == {report.id}, mode


async def test_a_missing_collection_is_an_error_not_an_empty_answer(deps: Deps) -> None:
    doc = await indexed(deps, "c", "a.txt", "harbour crane")
    with pytest.raises(searching.CollectionNotFound, match="'nowhere' does not exist"):
        await searching.search(deps, "nowhere", "crane", 5)
    assert await searching.search(deps, "c", "zebra", 5, SearchMode.KEYWORD) == []
    await deps.store.delete_document(doc.id)  # emptied, still there
    assert await searching.search(deps, "c", "crane", 5) == []
    with pytest.raises(ClientError):
        await searching.search(deps, "c", "   ", 5)


# -- the API --------------------------------------------------------------------------------


async def test_the_api_reports_mode_rankings_and_missing_collections(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    doc = await indexed(deps, "c", "Report.pdf", "harbour crane report", "budget")
    response = await client.get("/v1/collections/c/search", params={"q": "crane", "k": "1"})
    body = await response.json()
    assert (response.status, body["mode"]) == (200, "hybrid")
    (result,) = body["results"]
    assert (result["document_id"], result["chunk"], result["rankings"]) == (
        doc.id,
        0,
        {"vector": 1, "keyword": 1},
    )
    params = {"q": "crane", "mode": "keyword", "filename": "*.txt"}
    body = await (await client.get("/v1/collections/c/search", params=params)).json()
    assert (body["mode"], body["results"]) == ("keyword", [])
    params = {"q": "crane", "document_id": doc.id, "uploaded_from": "2000-01-01T00:00:00Z"}
    body = await (await client.get("/v1/collections/c/search", params=params)).json()
    assert body["results"][0]["document_id"] == doc.id

    missing = await client.get("/v1/collections/nowhere/search", params={"q": "crane"})
    error = (await missing.json())["error"]
    assert (missing.status, error["code"]) == (404, "collection_not_found")
    assert "upload documents into it" in error["message"]
    for name, value, code in [
        ("mode", "fuzzy", "bad_mode"),
        ("uploaded_to", "yesterday", "bad_parameter"),
        ("filename", "a\x00b", "bad_parameter"),  # PostgreSQL refuses NUL in text
        ("document_id", "\x00", "bad_parameter"),
    ]:
        response = await client.get("/v1/collections/c/search", params={"q": "x", name: value})
        assert (response.status, (await response.json())["error"]["code"]) == (400, code)


# -- the CLI ----------------------------------------------------------------------------------


async def test_cli_search_prints_rankings_and_fails_on_a_missing_collection(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    env = {"SHEAF_API_URL": str(client.make_url("/")).rstrip("/")}
    doc = await indexed(deps, "c", "minutes.txt", "harbour crane minutes", "budget")
    other = await indexed(deps, "c", "other.txt", "crane")

    def sheaf(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    found = await asyncio.to_thread(
        sheaf, "search", "crane", "-c", "c", "--mode", "keyword", "--document", doc.id
    )
    assert found.exit_code == 0, found.output
    assert "1. minutes.txt p.1" in found.output
    assert "(keyword #1)" in found.output
    assert other.id not in found.output
    hybrid = await asyncio.to_thread(sheaf, "search", "crane", "-c", "c", "--filename", "o*")
    assert "(vector #1, keyword #1)" in hybrid.output
    assert doc.id not in hybrid.output
    nothing = await asyncio.to_thread(sheaf, "search", "zebra", "-c", "c", "--mode", "keyword")
    assert (nothing.exit_code, nothing.output.strip()) == (0, "no results")
    missing = await asyncio.to_thread(sheaf, "search", "crane", "-c", "nowhere")
    assert missing.exit_code == 1
    assert "collection 'nowhere' does not exist" in missing.output
    assert "no results" not in missing.output
