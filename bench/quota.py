"""The cloud quota as the limit: Sheaf against a tokens- and requests-per-minute quota.

In the cloud an Azure OpenAI deployment's quota is the physical limit of ingestion. The
fake (`tests.openai_fake`, in this process) enforces one as Azure does: tokens and
requests per minute, each a bucket of ten seconds' worth refilled continuously, and a
request that does not fit gets 429 with `retry-after-ms` / `retry-after`. A text corpus
is uploaded to `sheaf up` (SQLite, `SHEAF_EMBEDDER=openai` pointed at the fake) with 1
and with 4 workers sharing the one quota.

Share of the quota = tokens the fake let in, over what the quota could let in between
the first and the last request it let in (the full bucket plus the refill meanwhile).
The same for requests; the larger share is the binding one. Target: ≥ 90%.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from bench.corpus import CorpusFile, text_corpus
from bench.harness import Context, percent
from bench.overhead import UPLOAD_CONCURRENCY, _running_sheaf
from bench.sheafproc import free_port, read_back, upload_all, wait_done
from tests.openai_fake import FakeOpenAI, Quota

NAME = "quota"
TITLE = "Embedding at the cloud quota (tokens and requests per minute, 429 + retry-after)"
BURST_SECONDS = 10.0
TARGET = 0.90
MODEL = "text-embedding-3-small"


@dataclass(frozen=True)
class Plan:
    tokens_per_minute: int
    requests_per_minute: int
    documents: int
    words: int  # per document; ~1.9 fake tokens a word


QUICK = Plan(tokens_per_minute=1_200_000, requests_per_minute=600, documents=40, words=13_000)
FULL = Plan(tokens_per_minute=3_000_000, requests_per_minute=1_200, documents=120, words=20_000)


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    files = text_corpus(ctx.workdir / "corpus", plan.documents, plan.words)
    ctx.note(
        f"quota: {plan.tokens_per_minute:,} tokens and {plan.requests_per_minute:,} requests "
        f"per minute, {BURST_SECONDS:g} s of burst; {len(files)} text documents of "
        f"~{plan.words:,} words; SQLite, default settings otherwise (SHEAF_CONCURRENCY, "
        "SHEAF_EMBEDDING_CONCURRENCY 4 per worker, SHEAF_EMBED_BATCH_SIZE 64)."
    )
    rows = []
    for workers in (1, 4):
        rows.append(await _one_run(ctx, plan, files, workers))
    ctx.table(
        "sustained share of the quota",
        [
            "workers",
            "seconds",
            "tokens let in",
            "token share",
            "request share",
            "429s",
            "documents",
            f"binding share ≥ {TARGET:.0%}",
        ],
        rows,
    )


async def _one_run(
    ctx: Context, plan: Plan, files: list[CorpusFile], workers: int
) -> tuple[object, ...]:
    ctx.progress(f"quota: {workers} worker(s)")
    run_dir = ctx.workdir / f"run-{workers}"
    run_dir.mkdir()
    quota = Quota(plan.tokens_per_minute, plan.requests_per_minute, BURST_SECONDS)
    async with FakeOpenAI(quota=quota) as fake:
        port = free_port()
        settings = {
            "SHEAF_DATABASE_URL": f"sqlite+aiosqlite:///{run_dir / 'sheaf.db'}",
            "SHEAF_BLOB_DIR": str(run_dir / "blobs"),
            "SHEAF_PORT": str(port),
            "SHEAF_WORKERS": str(workers),
            "SHEAF_LOG_FORMAT": "json",
            "SHEAF_EMBEDDER": "openai",
            "SHEAF_OPENAI_BASE_URL": f"{fake.url}/v1",
            "SHEAF_OPENAI_MODEL": MODEL,
            "SHEAF_EMBEDDING_DIMENSIONS": "256",
        }
        with _running_sheaf(settings, run_dir, workers) as sheaf:
            api = f"http://127.0.0.1:{port}"
            await sheaf.ready(api)
            started = time.monotonic()
            try:
                sent = await upload_all(api, [f.path for f in files], UPLOAD_CONCURRENCY)
                await wait_done(api, len(files), within=600)
            except Exception as exc:
                raise RuntimeError(f"{exc}\nSheaf's log ends with:\n{sheaf.tail()}") from exc
            seconds = time.monotonic() - started
        documents = await read_back(settings["SHEAF_DATABASE_URL"], list(sent))
    outcomes = Counter(d.error_code or d.status.value for d in documents)
    token_share, request_share = _shares(quota)
    binding = max(token_share, request_share)
    return (
        workers,
        f"{seconds:.0f}",
        f"{sum(tokens for _, tokens in quota.granted):,}",
        percent(token_share),
        percent(request_share),
        quota.refused,
        ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())),
        percent(binding) + ("" if binding >= TARGET else " **miss**"),
    )


def _shares(quota: Quota) -> tuple[float, float]:
    """Let in, over the most the quota could let in from its first grant to its last."""
    first, last = quota.granted[0][0], quota.granted[-1][0]
    span = last - first
    tokens = sum(tokens for _, tokens in quota.granted)
    possible_tokens = quota.tokens_per_second * (BURST_SECONDS + span)
    possible_requests = quota.requests_per_second * (BURST_SECONDS + span)
    return tokens / possible_tokens, len(quota.granted) / possible_requests
