"""A document's chunks as a stream of bounded batches, pulled from the extractor on demand.

The extractor yields pages as it reads them and `DocumentChunks` turns them into chunks as
they come, so what the worker holds for a document is one batch of chunks, one chunk's
words and one piece of a page, whatever the document's size. An extractor that can chunk
where it reads (`ChunkingExtractor`: the isolated extraction children) does the chunking
there, beside the worker, which then only embeds and writes; otherwise the worker chunks
the extractor's pages itself. Either way the batches are pulled in a thread (a parser and
a chunker are CPU-bound, a pipe read blocks, and other documents' heartbeats must keep
running), one batch per hop. The per-document limits of `Settings` are enforced as the
stream goes, so a document over a limit fails as soon as it crosses it:

    too_many_pages    more than SHEAF_DOCUMENT_MAX_PAGES pages
    too_many_chunks   more than SHEAF_DOCUMENT_MAX_CHUNKS chunks

and the worker's own memory limit is checked at every batch: past
SHEAF_WORKER_MEMORY_BYTES of resident memory, the document asking for more fails with
the transient `worker_memory_limit` (retried later, when the worker may hold less),
rather than the kernel's OOM killer taking the worker and every document in it.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

from sheaf.config import Settings
from sheaf.domain.chunking import DocumentChunks
from sheaf.domain.models import Chunk, ChunkBatch, Chunking
from sheaf.errors import PermanentError, TransientError
from sheaf.ports import ChunkingExtractor, Extractor

MiB = 1024 * 1024


def chunk_batches(
    extractor: Extractor,
    path: Path,
    content_type: str,
    settings: Settings,
    on_page: Callable[[], None],
) -> Iterator[ChunkBatch]:
    """The document's chunks in batches of `SHEAF_EMBED_BATCH_SIZE`, made by the extractor
    where it can (`ChunkingExtractor`), else here from its pages; `on_page` is called
    (from the reading thread) for every page read."""
    chunking = Chunking(
        settings.chunk_size,
        settings.chunk_overlap,
        settings.embed_batch_size,
        settings.document_max_pages,
    )
    if isinstance(extractor, ChunkingExtractor):
        return extractor.extract_chunks(path, content_type, chunking, on_page)
    return DocumentChunks(extractor.extract(path, content_type), chunking, on_page).batches()


class ChunkStream:
    """The chunks of one document, a batch at a time; counts pages and chunks as it goes.

    Call `aclose` when done, also early: it closes the batches' source (an isolated child
    stops parsing at once).
    """

    def __init__(self, batches: Iterator[ChunkBatch], settings: Settings) -> None:
        self._batches = batches
        self._settings = settings
        self._step: asyncio.Future[list[Chunk]] | None = None
        self.pages = 0
        self.chunks = 0
        self.extract_seconds = 0.0  # time spent waiting on the parser, not chunking

    async def next_batch(self) -> list[Chunk]:
        """The next batch of chunks, empty at the end of the document."""
        self._step = asyncio.ensure_future(asyncio.to_thread(self._read_batch))
        # Shielded: a cancelled attempt must not forget a step still running in its
        # thread; `aclose` closes the source only once that step is done.
        return await asyncio.shield(self._step)

    async def aclose(self) -> None:
        """Close the source (an isolated child stops parsing at once), from a thread and
        never while a step still runs in one."""
        close: Callable[[], object] | None = getattr(self._batches, "close", None)
        if close is None:
            return
        step = self._step
        if step is not None and not step.done():
            loop = asyncio.get_running_loop()

            def close_after(done: asyncio.Future[list[Chunk]]) -> None:
                if not done.cancelled():
                    done.exception()  # nobody awaits it any more: not a lost error
                loop.run_in_executor(None, close)

            step.add_done_callback(close_after)
            return
        await asyncio.shield(asyncio.to_thread(close))

    def _read_batch(self) -> list[Chunk]:
        batch = next(self._batches, None)
        if batch is None:
            return []
        self.pages, self.extract_seconds = batch.pages, batch.extract_seconds
        self.chunks += len(batch.chunks)
        limit = self._settings.document_max_chunks
        if self.chunks > limit:
            raise PermanentError(
                f"the document makes more than {limit} chunks (SHEAF_DOCUMENT_MAX_CHUNKS); "
                "split it into smaller files, or raise the limit",
                code="too_many_chunks",
            )
        self._check_memory()
        return batch.chunks

    def _check_memory(self) -> None:
        limit = self._settings.worker_memory_bytes
        resident = resident_bytes()
        if limit and resident is not None and resident > limit:
            raise TransientError(
                f"the worker holds {resident // MiB} MiB, more than SHEAF_WORKER_MEMORY_BYTES "
                f"({limit // MiB} MiB), so this document stopped to spare the others; it "
                "will be retried. Lower SHEAF_CONCURRENCY or SHEAF_EMBED_BATCH_SIZE, or give "
                "the worker more memory and raise the limit",
                code="worker_memory_limit",
            )


def resident_bytes() -> int | None:
    """This process's resident memory (Linux: /proc/self/statm); None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize()
