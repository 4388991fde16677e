"""7. Retrieval quality on CISI, and the local model's throughput, measured in one run.

CISI (`bench/data/cisi/`, origin in its README): 1,460 abstracts and 76 queries with
binary relevance judgements. What runs:

- **Sheaf end to end**, as a user runs it: `sheaf up` on the embedded default (SQLite,
  local blobs, the local model, SHEAF_WORKERS workers), every abstract uploaded through
  the API as a text file (title, blank line, abstract), the workers ingest them, and each
  query goes to the search API once per `mode` (keyword, vector, hybrid). Chunk hits
  (k=100) become a document ranking by each document's best chunk.
- **Two references on the same documents and queries**, outside Sheaf: plain BM25
  (`rank_bm25`'s BM25Okapi over lower-cased words, English stop words removed, one entry
  per document) and the same local model as a plain dense ranker (the chunks Sheaf would
  make, embedded by `LocalEmbedder` in this process; a document scores its best chunk).
- **Throughput of the model**: that reference embedding is also the model measured alone:
  the adapter in as many processes and threads as `sheaf up` gives it (SHEAF_WORKERS
  processes, cores / workers threads each), model loading excluded. Next to it a plain
  loop that calls ONNX Runtime once per chunk with every core, and Sheaf's end-to-end
  ingest rate (chunks/s from the first upload to the last document done), which includes
  upload, extraction, chunking and indexing.
- **Search latency**, p50 and p99 per mode, over every query sent.

Metrics at cut-off 10, averaged over the queries: nDCG@10 (binary gains), MRR@10 (1 / rank
of the first relevant document, 0 if none in the top 10) and recall@10.

`--quick` takes the first 8 judged queries and 200 documents (every document judged
relevant to them, 166, topped up with a seeded random sample of the others), so that the
run stays within a few minutes on a shared machine; every ranker sees the same subset.
`--full` uses all 1,460 documents and all 76 judged queries.

Because the model is the slowest stage of ingest, the throughput rows are measured again
on the overhead benchmark's PDF-heavy corpus (PDF, DOCX and text files of pseudo-words:
about 400 word pieces per 700-character chunk, so two windows each): Sheaf's ingest
against the model alone on the same chunks (2 documents with `--quick`, 20 with `--full`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import re
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import numpy as np

from bench.corpus import pdf_heavy
from bench.harness import Context, percentile
from bench.sheafproc import (
    SheafProcess,
    free_port,
    read_back,
    upload_all,
    wait_done,
    wait_log,
    wait_ready,
)
from sheaf.adapters.embed_local import LocalEmbedder, load_tokenizer, model_file
from sheaf.config import Settings
from sheaf.domain.chunking import chunk_pages
from sheaf.domain.models import Page
from sheaf.extract import LocalExtractor

NAME = "retrieval"
TITLE = "7. Retrieval quality on CISI and the local model's throughput"
DATA = Path(__file__).resolve().parent / "data" / "cisi"
MODES = ("keyword", "vector", "hybrid")
CUTOFF = 10
SEARCH_K = 100  # chunk hits asked for per query (the API's maximum), ranked into documents
WORKERS = 2  # `sheaf up`'s default
PLAIN_LOOP_CHUNKS = 60  # a sample: the plain loop is slow by design
_STOP_WORDS = """
a about above after all also an and any are as at be been being between both but by can
could did do does each for from had has have how i if in into is it its may more most no
not of on or other over same should so some such than that the their them then there
these they this those through to under up upon very was we were what when where which
while who whom why will with would you your
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"\w+")
_FILE_ID = re.compile(r"cisi-(\d+)\.txt$")


@dataclass(frozen=True)
class Plan:
    documents: int | None  # CISI documents; None: all
    queries: int | None  # judged CISI queries; None: all
    pdf_documents: int  # of the PDF-heavy corpus, for the throughput rows


QUICK = Plan(documents=200, queries=8, pdf_documents=2)
FULL = Plan(documents=None, queries=None, pdf_documents=20)


@dataclass
class Collection:
    documents: dict[int, str]  # id → title, blank line, abstract
    queries: dict[int, str]
    relevant: dict[int, set[int]]  # query id → relevant document ids (judged queries only)


@dataclass
class SheafRun:
    ingest_seconds: float
    chunks: int
    rankings: dict[str, dict[int, list[int]]]  # mode → query → document ids, best first
    latencies: dict[str, list[float]] = field(default_factory=dict)  # mode → seconds


# -- the collection --------------------------------------------------------------------------


def load_cisi(directory: Path = DATA) -> Collection:
    documents = {
        number: "\n\n".join(part for part in (fields.get("T", ""), fields.get("W", "")) if part)
        for number, fields in _records((directory / "CISI.ALL").read_text(encoding="latin-1"))
    }
    queries = {
        number: fields.get("W", "")
        for number, fields in _records((directory / "CISI.QRY").read_text(encoding="latin-1"))
    }
    # Two abstracts appear twice under different numbers (234 = 1440, 1084 = 1447): Sheaf
    # stores identical content once per collection, so every ranker sees one copy, the
    # lower number, which inherits the other's relevance judgements.
    first: dict[str, int] = {}
    alias: dict[int, int] = {}
    for number, body in sorted(documents.items()):
        alias[number] = first.setdefault(body, number)
    documents = {n: body for n, body in documents.items() if alias[n] == n}
    relevant: dict[int, set[int]] = {}
    for line in (directory / "CISI.REL").read_text().splitlines():
        if line.strip():
            query, document = line.split()[:2]
            relevant.setdefault(int(query), set()).add(alias.get(int(document), int(document)))
    return Collection(documents, queries, relevant)


def _records(text: str) -> list[tuple[int, dict[str, str]]]:
    """`.I n` records, each a map of field letter (T, A, W, X, B) → its text, unwrapped."""
    records = []
    for chunk in re.split(r"^\.I\s+", text, flags=re.M)[1:]:
        number, _, body = chunk.partition("\n")
        fields: dict[str, str] = {}
        for match in re.finditer(r"^\.([A-Z])\s*\n(.*?)(?=^\.[A-Z]\s*$|\Z)", body, re.M | re.S):
            fields[match.group(1)] = " ".join(match.group(2).split())
        records.append((int(number), fields))
    return records


def subset(collection: Collection, plan: Plan) -> Collection:
    """The judged queries of the plan and the documents they need, topped up at random."""
    judged = sorted(q for q in collection.relevant if q in collection.queries)
    chosen = judged[: plan.queries] if plan.queries else judged
    if plan.documents is None:
        keep = set(collection.documents)
    else:
        keep = {d for q in chosen for d in collection.relevant[q] if d in collection.documents}
        others = sorted(set(collection.documents) - keep)
        random.Random(17).shuffle(others)
        keep |= set(others[: max(0, plan.documents - len(keep))])
    return Collection(
        {d: text for d, text in collection.documents.items() if d in keep},
        {q: collection.queries[q] for q in chosen},
        {q: collection.relevant[q] & keep for q in chosen},
    )


# -- metrics -----------------------------------------------------------------------------------


def ndcg(ranking: Sequence[int], relevant: set[int], k: int = CUTOFF) -> float:
    gains = sum(1 / math.log2(i + 2) for i, d in enumerate(ranking[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return gains / ideal if ideal else 0.0


def mrr(ranking: Sequence[int], relevant: set[int], k: int = CUTOFF) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranking[:k]) if d in relevant), 0.0)


def recall(ranking: Sequence[int], relevant: set[int], k: int = CUTOFF) -> float:
    return len(set(ranking[:k]) & relevant) / len(relevant) if relevant else 0.0


def scores(rankings: dict[int, list[int]], collection: Collection) -> tuple[float, float, float]:
    judged = [q for q in collection.queries if collection.relevant.get(q)]
    return tuple(  # type: ignore[return-value]
        statistics.fmean(metric(rankings.get(q, []), collection.relevant[q]) for q in judged)
        for metric in (ndcg, mrr, recall)
    )


# -- the run ---------------------------------------------------------------------------------


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    collection = subset(load_cisi(), plan)
    defaults = Settings.from_env({})
    cores = os.cpu_count() or 1
    ctx.note(
        f"{len(collection.documents)} documents, {len(collection.queries)} judged queries "
        f"({'quick subset' if ctx.quick else 'the whole collection'}). Sheaf: `sheaf up` "
        f"defaults: SHEAF_EMBEDDER={defaults.embedder} ({_model_name()}), "
        f"SHEAF_CHUNK_SIZE={defaults.chunk_size}, SHEAF_CHUNK_OVERLAP="
        f"{defaults.chunk_overlap}, SHEAF_WORKERS={WORKERS} (each with "
        f"{max(1, cores // WORKERS)} inference thread(s)), SQLite; {cores} cores here."
    )
    files = _write_documents(ctx.workdir / "cisi", collection)
    sheaf = await _sheaf(ctx, files, collection)

    ctx.progress("BM25 reference")
    bm25 = _bm25_rankings(collection)
    ctx.progress("dense reference (the model alone, batched)")
    texts, owners = _chunks(collection, defaults)
    threads = max(1, cores // WORKERS)
    chunk_vectors, alone_seconds = _embed_alone(texts, threads, defaults)
    embedder = LocalEmbedder(threads=cores)
    dense = _dense_rankings(embedder, chunk_vectors, owners, collection)
    await embedder.close()
    ctx.progress("plain loop: one ONNX Runtime call per chunk")
    plain = _plain_loop(texts[:PLAIN_LOOP_CHUNKS], cores)

    rows = []
    for mode in MODES:
        rows.append([f"Sheaf {mode}", *scores(sheaf.rankings[mode], collection)])
    rows.append(["reference: BM25 (rank_bm25)", *scores(bm25, collection)])
    rows.append(["reference: the local model, plain dense", *scores(dense, collection)])
    ctx.table(
        f"retrieval quality at {CUTOFF} (mean over {len(collection.queries)} queries)",
        ["ranker", "nDCG@10", "MRR@10", "recall@10"],
        [[name, round(a, 3), round(b, 3), round(c, 3)] for name, a, b, c in rows],
    )
    if all(sheaf.rankings[m] == sheaf.rankings["vector"] for m in MODES):
        ctx.note(
            "All three modes returned the same rankings: this Sheaf ignores the `mode` "
            "parameter (hybrid and keyword search are not in this build), so every Sheaf "
            "row above is its vector search."
        )

    rows: list[tuple[str, int, float]] = [
        (
            f"CISI: the local model alone, batched ({WORKERS} processes x {threads} thread(s))",
            len(texts),
            alone_seconds,
        ),
        (f"CISI: plain loop, one call per chunk ({cores} threads)", plain[0], plain[1]),
        (
            f"CISI: Sheaf end to end, upload → searchable ({len(files)} documents)",
            sheaf.chunks,
            sheaf.ingest_seconds,
        ),
    ]
    ctx.progress(f"PDF-heavy corpus: {plan.pdf_documents} documents through Sheaf")
    rows += [
        (f"PDF-heavy: {name}", n, t)
        for name, n, t in await _pdf_heavy(ctx, plan.pdf_documents, defaults)
    ]
    ctx.table(
        "ingest and embedding throughput",
        ["what", "chunks", "seconds", "chunks/s"],
        [[name, n, round(t, 1), round(n / t, 1)] for name, n, t in rows],  # type: ignore[operator]
    )
    for corpus, alone, end_to_end in (("CISI", rows[0], rows[2]), ("PDF-heavy", rows[3], rows[4])):
        ratio = (end_to_end[1] / end_to_end[2]) / (alone[1] / alone[2])
        ctx.note(
            f"{corpus}: Sheaf's end-to-end rate is {100 * ratio:.0f}% of the model's own rate "
            "on the same chunks (target: at least 90%)."
        )
    ctx.table(
        "search latency over HTTP (one query at a time)",
        ["mode", "queries", "p50 ms", "p99 ms"],
        [
            [
                mode,
                len(sheaf.latencies[mode]),
                round(1000 * percentile(sheaf.latencies[mode], 50), 1),
                round(1000 * percentile(sheaf.latencies[mode], 99), 1),
            ]
            for mode in MODES
        ],
    )


def _model_name() -> str:
    from sheaf.adapters.embed_local import MODEL

    return MODEL


def _write_documents(directory: Path, collection: Collection) -> list[Path]:
    directory.mkdir(parents=True)
    files = []
    for number, text in sorted(collection.documents.items()):
        path = directory / f"cisi-{number}.txt"
        path.write_text(text + "\n", encoding="utf-8")
        files.append(path)
    return files


@contextlib.asynccontextmanager
async def _sheaf_up(ctx: Context, name: str) -> AsyncIterator[tuple[str, str, SheafProcess]]:
    """A fresh `sheaf up` on the defaults; yields its API URL, database URL and process."""
    run_dir = ctx.workdir / name
    run_dir.mkdir()
    port = free_port()
    url = f"sqlite+aiosqlite:///{run_dir / 'sheaf.db'}"
    settings = {
        "SHEAF_DATABASE_URL": url,
        "SHEAF_BLOB_DIR": str(run_dir / "blobs"),
        "SHEAF_PORT": str(port),
        "SHEAF_WORKERS": str(WORKERS),
        "SHEAF_LOG_FORMAT": "json",
    }
    up = SheafProcess(["up"], settings, run_dir, run_dir / "sheaf.log")
    api = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(api, up, within=120)
        await wait_log(up, "extraction processes ready", WORKERS, within=120)
        yield api, url, up
    except Exception as exc:
        raise RuntimeError(f"{exc}\nSheaf's log ends with:\n{up.tail()}") from exc
    finally:
        up.stop()


async def _ingest(ctx: Context, api: str, files: list[Path]) -> tuple[float, list[str]]:
    """Upload every file and wait until all are done: seconds taken, document ids."""
    ctx.progress(f"Sheaf: ingesting {len(files)} documents")
    started = time.perf_counter()
    sent = await upload_all(api, files)
    await wait_done(api, len(files), within=120 + 60 * len(files))  # a bound, not a target
    return time.perf_counter() - started, list(sent)


async def _chunk_count(url: str, ids: list[str]) -> int:
    documents = await read_back(url, ids)
    failed = [doc.filename for doc in documents if doc.status != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} documents did not complete, e.g. {failed[:3]}")
    return sum(doc.chunk_count or 0 for doc in documents)


async def _sheaf(ctx: Context, files: list[Path], collection: Collection) -> SheafRun:
    async with _sheaf_up(ctx, "sheaf-cisi") as (api, url, _):
        seconds, ids = await _ingest(ctx, api, files)
        ctx.progress("Sheaf: searching")
        run = SheafRun(seconds, 0, {})
        async with aiohttp.ClientSession() as session:
            for mode in MODES:
                run.rankings[mode], run.latencies[mode] = await _search_all(
                    session, api, collection, mode
                )
    run.chunks = await _chunk_count(url, ids)
    return run


async def _pdf_heavy(
    ctx: Context, documents: int, settings: Settings
) -> list[tuple[str, int, float]]:
    """Sheaf's ingest of the overhead benchmark's PDF-heavy corpus against the model alone
    on the same chunks (extracted and chunked here by the same code)."""
    files = pdf_heavy(ctx.workdir / "pdf-heavy", documents)
    async with _sheaf_up(ctx, "sheaf-pdf") as (api, url, _):
        seconds, ids = await _ingest(ctx, api, [f.path for f in files])
    chunks = await _chunk_count(url, ids)
    ctx.progress("PDF-heavy: the model alone on the same chunks")
    extractor = LocalExtractor()
    texts = [
        chunk.text
        for f in files
        for chunk in chunk_pages(
            extractor.extract(f.path, f.content_type), settings.chunk_size, settings.chunk_overlap
        )
    ]
    _, alone = _embed_alone(texts, max(1, (os.cpu_count() or 1) // WORKERS), settings)
    pages = sum(f.pages for f in files)
    return [
        (f"the local model alone ({len(files)} documents)", len(texts), alone),
        (f"Sheaf end to end ({len(files)} documents, {pages} pages)", chunks, seconds),
    ]


async def _search_all(
    session: aiohttp.ClientSession, api: str, collection: Collection, mode: str
) -> tuple[dict[int, list[int]], list[float]]:
    rankings: dict[int, list[int]] = {}
    latencies = []
    for number, text in collection.queries.items():
        query = urlencode({"q": text, "k": SEARCH_K, "mode": mode})
        started = time.perf_counter()
        async with session.get(f"{api}/v1/collections/bench/search?{query}") as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"search ({mode}) answered {response.status}: {body}")
        latencies.append(time.perf_counter() - started)
        ranking: list[int] = []
        for hit in body["results"]:
            match = _FILE_ID.search(hit["filename"])
            if match and int(match.group(1)) not in ranking:
                ranking.append(int(match.group(1)))
        rankings[number] = ranking
    return rankings, latencies


# -- references ------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def _bm25_rankings(collection: Collection) -> dict[int, list[int]]:
    from rank_bm25 import BM25Okapi

    ids = sorted(collection.documents)
    index = BM25Okapi([_words(collection.documents[d]) for d in ids])
    rankings = {}
    for number, text in collection.queries.items():
        found = index.get_scores(_words(text))
        rankings[number] = [ids[i] for i in np.argsort(-found, kind="stable")[:CUTOFF]]
    return rankings


def _chunks(collection: Collection, settings: Settings) -> tuple[list[str], list[int]]:
    """The chunks Sheaf makes of each document (same function, same defaults)."""
    texts, owners = [], []
    for number, text in sorted(collection.documents.items()):
        for chunk in chunk_pages([Page(1, text)], settings.chunk_size, settings.chunk_overlap):
            texts.append(chunk.text)
            owners.append(number)
    return texts, owners


def _dense_rankings(
    embedder: LocalEmbedder,
    chunk_vectors: np.ndarray,
    owners: list[int],
    collection: Collection,
) -> dict[int, list[int]]:
    numbers = list(collection.queries)
    queries = np.array(embedder.embed_sync([collection.queries[q] for q in numbers]))
    owner_array = np.array(owners)
    ids = np.unique(owner_array)
    rankings = {}
    for number, query in zip(numbers, queries, strict=True):
        similarity = chunk_vectors @ query
        best = np.full(len(ids), -np.inf)
        np.maximum.at(best, np.searchsorted(ids, owner_array), similarity)
        rankings[number] = [int(ids[i]) for i in np.argsort(-best, kind="stable")[:CUTOFF]]
    return rankings


def _embed_alone(texts: list[str], threads: int, settings: Settings) -> tuple[np.ndarray, float]:
    """The chunks' vectors from `WORKERS` processes running the adapter, as `sheaf up` has
    them (each with `threads` inference threads), and the seconds that took, model loading
    excluded: the model's own capacity on this machine, without Sheaf around it."""
    parts = [texts[i::WORKERS] for i in range(WORKERS)]
    context = multiprocessing.get_context("spawn")  # no copy of this process's threads
    with context.Pool(WORKERS, _load_model, (threads, settings.local_embedding_batch_size)) as pool:
        pool.map(_embed_part, [["warm up"]] * WORKERS, chunksize=1)
        started = time.perf_counter()
        answers = pool.map(_embed_part, parts, chunksize=1)
        seconds = time.perf_counter() - started
    vectors = np.zeros((len(texts), 384), dtype=np.float32)
    for i, answer in enumerate(answers):
        vectors[i::WORKERS] = answer
    return vectors, seconds


_MODEL: LocalEmbedder | None = None


def _load_model(threads: int, batch_size: int) -> None:
    global _MODEL
    _MODEL = LocalEmbedder(threads=threads, batch_size=batch_size)


def _embed_part(texts: list[str]) -> np.ndarray:
    assert _MODEL is not None
    return np.array(_MODEL.embed_sync(texts), dtype=np.float32)


def _plain_loop(texts: list[str], threads: int) -> tuple[int, float]:
    """The model the naive way: one text per ONNX Runtime call, truncated to its window."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file()), options, ["CPUExecutionProvider"])
    tokenizer = load_tokenizer()
    names = {item.name for item in session.get_inputs()}
    started = time.perf_counter()
    for text in texts:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0][0]
        vector = hidden.mean(axis=0)
        vector /= np.linalg.norm(vector)
    return len(texts), time.perf_counter() - started
