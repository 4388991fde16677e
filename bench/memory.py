"""Large documents: a worker's peak memory, and a large file end to end against a bare loop.

Memory: each document goes through the worker's own pipeline, built from settings as a
worker builds it (SQLite, local blobs, extraction in isolated children, the lexical
embedder), in a fresh process (`tests.memory_probe`) that resets the kernel's peak-RSS
mark just before the document and reads it just after. The figure is the worker
process's peak growth; the extraction child has its own limit (SHEAF_EXTRACT_MEMORY_BYTES)
and its peak is shown beside it. Target: ≤ 200 MiB growth for a 100 MB text file, a
100 MB text on one line and a 2,000-page PDF (quick: 20 MB and 300 pages).

End to end: one large text file through `sheaf up` (one worker, default settings,
uploaded over HTTP) against the overhead benchmark's bare loop (extract, chunk, embed
with the same embedder, insert in one transaction) on the same file and database kind.
Target: Sheaf ≥ 90% of the bare loop's throughput.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.corpus import CorpusFile, large_pdf
from bench.harness import ROOT, Context, percent, ratio
from bench.overhead import _bare, _sheaf
from bench.postgres import unavailable_reason
from sheaf.domain.models import ContentType
from tests.memory_probe import write_prose

NAME = "memory"
TITLE = "Large documents: worker memory and end-to-end throughput"
MiB = 1024 * 1024
TARGET_MIB = 200
TARGET_RATIO = 0.90


@dataclass(frozen=True)
class Plan:
    text_bytes: int
    pdf_pages: int
    end_to_end_bytes: int


QUICK = Plan(text_bytes=20 * 1000 * 1000, pdf_pages=300, end_to_end_bytes=10 * 1000 * 1000)
FULL = Plan(text_bytes=100 * 1000 * 1000, pdf_pages=2000, end_to_end_bytes=100 * 1000 * 1000)


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    documents = _documents(ctx, plan)
    rows = []
    for label, path in documents:
        ctx.progress(f"memory: {label}")
        measured = _probe(ctx, path)
        growth = measured["peak_growth_bytes"] / MiB
        rows.append(
            (
                label,
                f"{path.stat().st_size / MiB:.0f} MiB",
                measured["error_code"] or measured["outcome"],
                measured["pages"],
                measured["chunks"],
                f"{measured['seconds']:.1f}",
                f"{growth:.0f}",
                "yes" if growth <= TARGET_MIB else "**no**",
                f"{measured['child_peak_bytes'] / MiB:.0f}",
            )
        )
    ctx.table(
        "worker peak memory growth per document",
        [
            "document",
            "file",
            "outcome",
            "pages",
            "chunks",
            "seconds",
            "worker peak growth MiB",
            f"≤ {TARGET_MIB} MiB",
            "extraction child peak MiB",
        ],
        rows,
    )
    await _end_to_end(ctx, plan)


def _documents(ctx: Context, plan: Plan) -> list[tuple[str, Path]]:
    megabytes = plan.text_bytes // (1000 * 1000)
    prose, line = ctx.workdir / "prose.txt", ctx.workdir / "one-line.txt"
    ctx.progress("memory: writing the documents")
    write_prose(prose, plan.text_bytes)
    write_prose(line, plan.text_bytes, one_line=True)
    pdf = large_pdf(ctx.workdir / "large.pdf", plan.pdf_pages).path
    return [
        (f"{megabytes} MB text", prose),
        (f"{megabytes} MB text on one line", line),
        (f"{plan.pdf_pages}-page PDF", pdf),
    ]


def _probe(ctx: Context, path: Path) -> dict[str, Any]:
    workdir = ctx.workdir / f"probe-{path.stem}"
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", str(path), str(workdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed on {path.name}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


async def _end_to_end(ctx: Context, plan: Plan) -> None:
    path = ctx.workdir / "end-to-end.txt"
    write_prose(path, plan.end_to_end_bytes, seed=11)
    files = [CorpusFile(path, ContentType.TEXT, 1)]
    databases = ["sqlite"]
    if not ctx.quick and unavailable_reason(ctx.postgres_admin_dsn) is None:
        databases.append("postgres")
    megabytes = plan.end_to_end_bytes // (1000 * 1000)
    rows = []
    for database in databases:
        bare = _bare(ctx, "large text", files, database)
        sheaf = await _sheaf(ctx, "large text", files, database, 1, within=1200)
        share = ratio(bare.seconds / sheaf.seconds, 1.0) if sheaf.failed == 0 else None
        rows.append(
            (
                database,
                f"{bare.seconds:.1f}",
                f"{sheaf.seconds:.1f}",
                percent(share),
                "yes" if share is not None and share >= TARGET_RATIO else "**no**",
                ", ".join(f"{k} {v:.1f}" for k, v in sheaf.stage_means.items()),
            )
        )
    ctx.table(
        f"one {megabytes} MB text file end to end (Sheaf: `sheaf up`, 1 worker; upload included)",
        [
            "database",
            "bare loop s",
            "Sheaf s",
            "Sheaf / bare",
            f"≥ {TARGET_RATIO:.0%}",
            "Sheaf stage seconds",
        ],
        rows,
    )
