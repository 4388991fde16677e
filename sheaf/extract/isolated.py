"""Extraction in child processes, so a hostile file can only take down a child.

Parsers loop forever, inflate bombs or crash the interpreter on crafted files
(bad-inputs.md #1-#10, #14, #18). `IsolatedExtractor` runs the wrapped extractor in a
small pool of spawned child processes, each under an address-space limit
(`RLIMIT_AS`). Pages stream back over the pipe as the child reads them, in pieces of at
most `piece_chars` characters (`extract`), or the child chunks them as it reads and sends
the chunks in batches (`extract_chunks`, the `ChunkingExtractor` port: chunking then runs
beside the worker), and the parent waits for each page no longer than the time limit: a
large document that keeps producing pages is never stopped for its size. The
document fails for good with a named `ExtractionError` code when:

    timeout        no page within `timeout_seconds`: the child is killed
    memory_limit   the child ran out of its `memory_bytes` (MemoryError, or killed by
                   SIGKILL, which is what the kernel's OOM killer sends)
    parser_crash   the child died any other way (a segfault, an abort)

plus the wrapped extractor's own codes (`encrypted`, `not_a_pdf`, ...) unchanged.
Any other exception in the child (a bug, a missing file) is re-raised here as a
`RuntimeError`, which the worker treats like any unexpected error: a transient failure.

What callers may rely on: `extract` is safe to call from many threads at once (at most
`processes` run in parallel; the rest wait for a free child; a child is held until its
pages are read to the end or the iterator is closed); a child serves one
document after another and is replaced (lazily, on the next call) after a timeout,
crash or memory failure; children never outlive the parent, even a SIGKILLed one (each
watches a pipe whose only writer end is the parent's, from a thread, and exits on its EOF;
only a parser spinning in C code that never releases the GIL delays that); `close()`,
garbage collection or interpreter exit kill them. A child stopped from outside (SIGTERM,
SIGINT, SIGHUP) or a `close()` during a call is not the file's fault: `TransientError`.
Only picklable extractors can be wrapped (the `spawn` start method sends them to the
child), and the program's main module must be safe to import (the usual `spawn` rule).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import threading
import traceback
import weakref
from collections.abc import Callable, Generator, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from sheaf.domain.chunking import DocumentChunks
from sheaf.domain.models import Chunk, ChunkBatch, Chunking, Page
from sheaf.errors import ExtractionError, PermanentError, SheafError, TransientError
from sheaf.extract import LocalExtractor
from sheaf.ports import Extractor

log = logging.getLogger(__name__)

STARTUP_SECONDS = 60.0
"""How long a new child may take to import the parsers and say it is ready."""

PIECE_CHARS = 256 * 1024
"""The most text one message from a child carries: a longer page comes in pieces, so the
worker never holds more than a piece of any page, however large the page."""

_EXIT_MEMORY = 86  # the child's exit status after a MemoryError it could not report
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}  # sent by people, not parsers
_READY = "ready"
_PAGE, _PAGE_READ, _CHUNKS = "page", "read", "chunks"  # what a child streams to its parent
_STREAMED = {_PAGE, _PAGE_READ, _CHUNKS}
_LAST_CHUNKS = "last chunks"  # a document's last batch, sent instead of "done"
_Request = tuple[str, str, int, "Chunking | None"]  # path, content type, piece size, chunking


class IsolatedExtractor:
    """The `Extractor` port, run in a pool of child processes under time and memory limits."""

    def __init__(
        self,
        timeout_seconds: float = 60.0,
        memory_bytes: int = 1024 * 1024 * 1024,
        processes: int = 2,
        *,
        extractor: Extractor | None = None,
        piece_chars: int = PIECE_CHARS,
    ) -> None:
        if timeout_seconds <= 0 or memory_bytes <= 0 or processes < 1 or piece_chars < 1:
            raise ValueError("timeout, memory limit, pool size and piece size must be positive")
        self.timeout_seconds = timeout_seconds
        self.memory_bytes = memory_bytes
        self.processes = processes
        self.piece_chars = piece_chars
        self._extractor = extractor or LocalExtractor()
        self._context = multiprocessing.get_context("spawn")
        self._slots = threading.BoundedSemaphore(processes)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_all, self._children)

    def extract(self, path: Path, content_type: str) -> Iterator[Page]:
        """Pages of text as the child reads them, or `ExtractionError`; blocks while all
        children are busy. Each page longer than `piece_chars` comes in pieces (`Page`).

        The time limit is on progress: the child must send the next page (or piece)
        within `timeout_seconds`, so a long document that keeps producing pages runs as
        long as it needs, while a parser stuck on one page is stopped. Time spent by the
        caller between pages does not count. Closing the iterator before its end kills
        the child (it would go on parsing a document nobody reads); the next call starts
        a fresh one.
        """
        replies = self._exchange((str(path), content_type, self.piece_chars, None))
        try:
            for _, number, text in replies:
                yield Page(number, text)
        finally:
            replies.close()

    def extract_chunks(
        self, path: Path, content_type: str, chunking: Chunking, on_page: Callable[[], None]
    ) -> Iterator[ChunkBatch]:
        """The document's chunks, made in the child as it reads the pages
        (`DocumentChunks`), so chunking runs beside the worker, not in it; otherwise as
        `extract`. The child reports every page (or piece) it reads, which calls `on_page`
        here and restarts the time limit, so a page that makes no chunk still counts as
        progress and a slow page is stopped as before."""
        replies = self._exchange((str(path), content_type, self.piece_chars, chunking))
        try:
            for reply in replies:
                if reply[0] == _PAGE_READ:
                    on_page()
                else:
                    _, chunks, pages, extract_seconds = reply
                    yield ChunkBatch([Chunk(*c) for c in chunks], pages, extract_seconds)
        finally:
            replies.close()

    def _exchange(self, request: _Request) -> Generator[tuple[Any, ...], None, None]:
        """Send `request` to a free child and yield its replies until it says it is done;
        see `extract` for the limits and what closing early does. A document's last batch
        of chunks also says the child is done: it is yielded once the child is free again,
        so a document does not hold a child while its last chunks are embedded."""
        last = None
        with self._slots:
            child = None
            finished = False
            try:
                child = self._checkout()
                child.send(request)
                while True:
                    reply = child.receive(self.timeout_seconds)
                    if reply[0] not in _STREAMED:
                        finished = True  # the child finished the request: it is reusable
                        if reply[0] == _LAST_CHUNKS:
                            last = (_CHUNKS, *reply[1:])
                        else:
                            _raise_unless_done(reply)
                        break
                    yield reply
            except GeneratorExit:
                if child is not None and not finished:
                    self._retire(child)
                raise
            except BaseException as exc:
                if child is not None and not finished:
                    self._retire(child)
                    child = None
                if self._closed:  # close() killed the child under us: not the file's fault
                    closed = TransientError("the extractor was closed", code="extractor_closed")
                    raise closed from exc
                if child is not None:
                    self._checkin(child)
                raise
            if child is not None:
                self._checkin(child)
        if last is not None:
            yield last

    def warm(self) -> int:
        """Start the children now rather than at the first document (a spawned child imports
        the parsers: hundreds of milliseconds); returns how many are ready. Best effort: a
        child that fails to start is logged, and `extract` will try again."""
        held = 0
        while held < self.processes and self._slots.acquire(blocking=False):
            held += 1  # under a slot, as in `extract`: never more children than slots
        children: list[_Child] = []
        try:
            for _ in range(held):
                children.append(self._checkout())
        except SheafError as exc:
            log.warning("could not start an extraction process", extra={"error": exc.message})
        finally:
            for child in children:
                self._checkin(child)
            for _ in range(held):
                self._slots.release()
        return len(children)

    def close(self) -> None:
        """Kill every child; calls under way fail with a `TransientError`."""
        with self._lock:
            self._closed = True
            idle, self._idle = set(self._idle), []
            self._children -= idle  # the busy ones stay: their callers retire them
            busy = set(self._children)
        for child in busy:
            child.stop()  # only the signal: the caller's thread still reads its pipe
        _kill_all(idle)

    def pids(self) -> list[int]:
        """Process ids of the live children (for tests and diagnostics)."""
        with self._lock:
            return sorted(child.pid for child in self._children)

    def _checkout(self) -> _Child:
        with self._lock:
            if self._closed:
                raise TransientError("the extractor was closed", code="extractor_closed")
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                self._children.discard(child)  # died while idle (killed from outside)
            child = _Child(self._context, self._extractor, self.memory_bytes)
            self._children.add(child)
        try:
            child.wait_ready()
        except BaseException:
            self._retire(child)
            raise
        return child

    def _checkin(self, child: _Child) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        self._retire(child)

    def _retire(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            self._children.discard(child)

    def __enter__(self) -> IsolatedExtractor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Child:
    """One spawned child: a request pipe, and a lifeline it exits on when we die."""

    def __init__(self, context: SpawnContext, extractor: Extractor, memory_bytes: int) -> None:
        self._conn, child_conn = context.Pipe()
        lifeline, self._lifeline = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(child_conn, lifeline, extractor, memory_bytes),
            name="sheaf-extract",
            daemon=True,
        )
        self._process.start()
        assert self._process.pid is not None  # set by start()
        self.pid = self._process.pid
        child_conn.close()
        lifeline.close()

    def wait_ready(self) -> None:
        try:
            if self._conn.poll(STARTUP_SECONDS) and self._conn.recv() == _READY:
                return
        except (EOFError, OSError):
            self._process.join(1)
        raise TransientError(
            f"the extraction process did not start ({self._exit_description()})",
            code="extractor_unavailable",
        )

    def alive(self) -> bool:
        return self._process.is_alive()

    def send(self, request: _Request) -> None:
        try:
            self._conn.send(request)
        except (EOFError, OSError):
            raise self._died() from None

    def receive(self, timeout: float) -> tuple[Any, ...]:
        """The child's next message; raise `ExtractionError` if none comes in time."""
        try:
            if self._conn.poll(timeout):
                reply: tuple[Any, ...] = self._conn.recv()
                return reply
        except (EOFError, OSError):
            raise self._died() from None
        self.kill()
        raise ExtractionError(
            f"Extracting the text made no progress for {timeout:g} s (no page was read), so "
            "it was stopped. The file may be malformed in a way that makes the parser loop: "
            "re-export it (for example print it to a new PDF) and upload it again. A healthy "
            "file with very slow pages needs a higher limit (SHEAF_EXTRACT_TIMEOUT_SECONDS).",
            code="timeout",
        )

    def _died(self) -> ExtractionError | TransientError:
        self._process.join(5)
        code = self._process.exitcode
        if code is None or -code in _STOP_SIGNALS:  # the child was stopped from outside
            return TransientError(
                f"the extraction process was stopped ({self._exit_description()})",
                code="extractor_lost",
            )
        if code in (_EXIT_MEMORY, -signal.SIGKILL):
            return ExtractionError(
                "Extracting the text needed more memory than the limit "
                "(SHEAF_EXTRACT_MEMORY_BYTES), so it was stopped. The file may be a "
                "decompression bomb: re-export it without oversized embedded content, "
                "or raise the limit if it is a healthy file.",
                code="memory_limit",
            )
        return ExtractionError(
            f"The parser crashed on this file ({self._exit_description()}). The file is "
            "probably damaged or crafted: repair or re-export it (for example print it "
            "to a new PDF) and upload it again.",
            code="parser_crash",
        )

    def _exit_description(self) -> str:
        code = self._process.exitcode
        if code is None:
            return "it is still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def stop(self) -> None:
        """SIGKILL the child; safe from any thread."""
        self._process.kill()

    def kill(self) -> None:
        """SIGKILL, reap and close the pipes; only by the thread that owns the child."""
        self._process.kill()
        self._process.join(5)
        self._conn.close()
        self._lifeline.close()


def _kill_all(children: set[_Child]) -> None:
    for child in list(children):
        child.kill()
    children.clear()


def _raise_unless_done(reply: tuple[Any, ...]) -> None:
    kind = reply[0]
    if kind == "done":
        return
    if kind == "refused":
        raise ExtractionError(reply[2], code=reply[1])
    raise RuntimeError(f"extraction failed in the child process:\n{reply[1]}")


# --- the child --------------------------------------------------------------------


def _serve(conn: Connection, lifeline: Connection, extractor: Extractor, memory_bytes: int) -> None:
    """Answer requests until the parent goes away. Runs in the child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if not _reply(conn, _READY):
        return
    while True:
        try:
            path, content_type, piece_chars, chunking = conn.recv()
        except (EOFError, OSError):
            return
        if chunking is None:
            messages = _pages(extractor, Path(path), content_type, piece_chars)
        else:
            messages = _chunks(conn, extractor, Path(path), content_type, chunking)
        try:
            sent = _stream(conn, messages)
        except MemoryError:
            os._exit(_EXIT_MEMORY)
        if not sent:
            return


def _reply(conn: Connection, message: object) -> bool:
    """Send to the parent; False when it is gone (SIGKILLed while we started or parsed).

    Not an error of ours: exit quietly, rather than leave a traceback in the log of the
    worker that is already being restarted (the lifeline thread may not have won the race).
    """
    try:
        conn.send(message)
    except OSError:  # BrokenPipeError, ConnectionResetError: the other end is closed
        return False
    return True


def _stream(conn: Connection, messages: Iterator[tuple[Any, ...]]) -> bool:
    """Send each message as it is made, then how it ended (a last batch of chunks says so
    itself). Sending blocks while the parent has not read the previous message, so the
    child is never more than a message ahead. False when the parent is gone."""
    try:
        for message in messages:
            if not _reply(conn, message):
                return False
            if message[0] == _LAST_CHUNKS:
                return True
    except _ParentGone:
        return False
    except MemoryError:
        raise
    except PermanentError as exc:
        return _reply(conn, ("refused", exc.code, exc.message))
    except Exception:
        return _reply(conn, ("failed", traceback.format_exc(limit=20)))
    return _reply(conn, ("done",))


def _pages(
    extractor: Extractor, path: Path, content_type: str, piece_chars: int
) -> Iterator[tuple[Any, ...]]:
    """Each page, in pieces of at most `piece_chars` characters."""
    for page in extractor.extract(path, content_type):
        for start in range(0, max(len(page.text), 1), piece_chars):
            yield (_PAGE, page.number, page.text[start : start + piece_chars])


def _chunks(
    conn: Connection, extractor: Extractor, path: Path, content_type: str, chunking: Chunking
) -> Iterator[tuple[Any, ...]]:
    """The document's chunk batches (chunks as plain tuples: cheaper to pickle), the last
    one marked as such, and each page read reported at once, however long it takes to
    make a chunk of it."""

    def read() -> None:
        if not _reply(conn, (_PAGE_READ,)):
            raise _ParentGone

    batches = DocumentChunks(extractor.extract(path, content_type), chunking, read).batches()
    batch = next(batches, None)
    while batch is not None:
        following = next(batches, None)  # one batch ahead: is this one the last?
        chunks = [(c.ordinal, c.text, c.page_start, c.page_end) for c in batch.chunks]
        kind = _CHUNKS if following is not None else _LAST_CHUNKS
        yield (kind, chunks, batch.pages, batch.extract_seconds)
        batch = following


class _ParentGone(Exception):
    """The parent stopped listening while the child reported a page."""


def _exit_with_parent(lifeline: Connection) -> None:
    """Block on the lifeline; its EOF means the parent is gone, so go too."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(0)
