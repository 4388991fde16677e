"""How much a worker's memory grows while it processes one document, measured for real.

Run in a fresh process (`python -m tests.memory_probe FILE WORKDIR [name=value ...]`,
the names being `Settings` fields): it
builds Sheaf from settings exactly as a worker does (SQLite, a local blob directory, the
lexical embedder, extraction in isolated children), processes a small document first so
that imports, pools and caches exist, uploads FILE, resets the kernel's peak-RSS mark
(`/proc/self/clear_refs`), processes FILE and prints one JSON line:

    outcome            what `process_document` returned
    peak_growth_bytes  the worker's peak RSS while processing, minus its RSS just before
    child_peak_bytes   the largest peak RSS of an extraction child (its own limit applies)
    seconds, pages, chunks

With `--bare` first it times the same stages written by hand in one thread instead (the
reference the pipeline is compared with), and reports the same fields.

Linux only (it reads /proc). Used by the memory test and by `python -m bench memory`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.bootstrap import migrate, open_deps
from sheaf.config import Settings
from sheaf.domain.chunking import chunk_pages
from sheaf.extract import LocalExtractor
from sheaf.extract.detect import HEAD_BYTES, detect_content_type
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document

READ_BYTES = 1024 * 1024


def write_prose(path: Path, size: int, *, one_line: bool = False, seed: int = 7) -> None:
    """About `size` bytes of random words, 12 to a line (or all on one line), written
    a block at a time: the test must not hold the document it asks Sheaf to process."""
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 10)))
        for _ in range(5000)
    ]
    end = " " if one_line else "\n"
    with path.open("w") as file:
        written = 0
        while written < size:
            lines = [" ".join(rng.choices(vocabulary, k=12)) + end for _ in range(2000)]
            block = "".join(lines)
            file.write(block)
            written += len(block)


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None, f"no {field} in /proc/{pid}/status"
    return int(match.group(1)) * 1024


async def file_body(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while block := file.read(READ_BYTES):
            yield block


async def _process(deps: Deps, path: Path, collection: str) -> str:
    await accept_upload(deps, collection, path.name, file_body(path))
    [lease] = await deps.store.claim_queued_documents("probe", deps.settings.lease_seconds, 1)
    return (await process_document(deps, lease)).label


async def measure(config: Settings, path: Path, workdir: Path) -> dict[str, Any]:
    async with open_deps(config, warm_extractor=True) as deps:
        warm_up = workdir / "warm-up.txt"
        warm_up.write_text("a small document to warm the worker up\n" * 200)
        await _process(deps, warm_up, "warm")
        await accept_upload(deps, "probe", path.name, file_body(path))
        [lease] = await deps.store.claim_queued_documents("probe", config.lease_seconds, 1)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak mark restarts from now
        before = status_bytes("VmRSS")
        started = time.perf_counter()
        outcome = (await process_document(deps, lease)).label
        seconds = time.perf_counter() - started
        peak = status_bytes("VmHWM")
        children: list[int] = getattr(deps.extractor, "pids", list)()
        child_peak = max((status_bytes("VmHWM", pid) for pid in children), default=0)
        document = await deps.store.get_document(lease.document_id, history=False)
    assert document is not None
    return {
        "outcome": outcome,
        "peak_growth_bytes": peak - before,
        "child_peak_bytes": child_peak,
        "seconds": seconds,
        "pages": document.page_count,
        "chunks": document.chunk_count,
        "error_code": document.error_code,
    }


def bare(config: Settings, path: Path, workdir: Path) -> dict[str, Any]:
    """The reference: the same stages by hand in one thread (extract, chunk, embed with
    the same embedder, insert in one SQLite transaction with Sheaf's durability)."""
    extractor = LocalExtractor()
    embedder = LexicalEmbedder(config.embedding_dimensions)
    db = sqlite3.connect(workdir / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE chunks (ordinal INT, text TEXT, embedding BLOB)")
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = status_bytes("VmRSS")
    started = time.perf_counter()
    with path.open("rb") as file:
        kind = detect_content_type(file.read(HEAD_BYTES), path.name)
    pages = list(extractor.extract(path, kind.value))
    chunks = chunk_pages(pages, config.chunk_size, config.chunk_overlap)
    vectors = embedder.embed_sync([chunk.text for chunk in chunks])
    rows = [
        (chunk.ordinal, chunk.text, np.asarray(vector, dtype="<f4").tobytes())
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO chunks VALUES (?, ?, ?)", rows)
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return {
        "outcome": "completed",
        "peak_growth_bytes": status_bytes("VmHWM") - before,
        "seconds": seconds,
        "pages": len({page.number for page in pages}),
        "chunks": len(chunks),
    }


def main(argv: list[str]) -> None:
    reference = argv[0] == "--bare"
    path, workdir, *assignments = argv[1:] if reference else argv
    config = Settings.from_env(
        {},
        database_url=f"sqlite+aiosqlite:///{Path(workdir) / 'sheaf.db'}",
        blob_dir=Path(workdir) / "blobs",
        **{
            "embedder": "lexical",  # the pipeline's memory, not a model's (and fast)
            "embedding_dimensions": "1024",
            **dict(assignment.split("=", 1) for assignment in assignments),
        },
    )
    if reference:
        print(json.dumps(bare(config, Path(path), Path(workdir))))
        return
    migrate(config)
    print(json.dumps(asyncio.run(measure(config, Path(path), Path(workdir)))))


if __name__ == "__main__":
    main(sys.argv[1:])
