"""Extraction in child processes, so a hostile file can only take down a child.

Parsers loop forever, inflate bombs or crash the interpreter on crafted files
(bad-inputs.md #1-#10, #14, #18). `IsolatedExtractor` runs the wrapped extractor in a
small pool of spawned child processes, each under an address-space limit
(`RLIMIT_AS`), and waits for an answer no longer than the wall-clock limit. The
document then fails for good with a named `ExtractionError` code:

    timeout        no answer within `timeout_seconds`: the child is killed
    memory_limit   the child ran out of its `memory_bytes` (MemoryError, or killed by
                   SIGKILL, which is what the kernel's OOM killer sends)
    parser_crash   the child died any other way (a segfault, an abort)

plus the wrapped extractor's own codes (`encrypted`, `not_a_pdf`, ...) unchanged.
Any other exception in the child (a bug, a missing file) is re-raised here as a
`RuntimeError`, which the worker treats like any unexpected error: a transient failure.

What callers may rely on: `extract` is safe to call from many threads at once (at most
`processes` run in parallel; the rest wait for a free child); a child serves one
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
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError, PermanentError, SheafError, TransientError
from sheaf.extract import LocalExtractor
from sheaf.ports import Extractor

log = logging.getLogger(__name__)

STARTUP_SECONDS = 60.0
"""How long a new child may take to import the parsers and say it is ready."""

_EXIT_MEMORY = 86  # the child's exit status after a MemoryError it could not report
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}  # sent by people, not parsers
_READY = "ready"


class IsolatedExtractor:
    """The `Extractor` port, run in a pool of child processes under time and memory limits."""

    def __init__(
        self,
        timeout_seconds: float = 60.0,
        memory_bytes: int = 1024 * 1024 * 1024,
        processes: int = 2,
        *,
        extractor: Extractor | None = None,
    ) -> None:
        if timeout_seconds <= 0 or memory_bytes <= 0 or processes < 1:
            raise ValueError("timeout, memory limit and pool size must be positive")
        self.timeout_seconds = timeout_seconds
        self.memory_bytes = memory_bytes
        self.processes = processes
        self._extractor = extractor or LocalExtractor()
        self._context = multiprocessing.get_context("spawn")
        self._slots = threading.BoundedSemaphore(processes)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_all, self._children)

    def extract(self, path: Path, content_type: str) -> list[Page]:
        """Pages of text, or `ExtractionError`; blocks while all children are busy."""
        with self._slots:
            child = None
            try:
                child = self._checkout()
                reply = child.call((str(path), content_type), self.timeout_seconds)
            except BaseException as exc:
                if child is not None:
                    self._retire(child)
                if self._closed:  # close() killed the child under us: not the file's fault
                    closed = TransientError("the extractor was closed", code="extractor_closed")
                    raise closed from exc
                raise
            self._checkin(child)
        return _unpack(reply)

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

    def call(self, request: tuple[str, str], timeout: float) -> tuple[Any, ...]:
        """Send one request and wait for its reply; raise `ExtractionError` if none comes."""
        try:
            self._conn.send(request)
            if self._conn.poll(timeout):
                reply: tuple[Any, ...] = self._conn.recv()
                return reply
        except (EOFError, OSError):
            raise self._died() from None
        self.kill()
        raise ExtractionError(
            f"Extracting the text took longer than {timeout:g} s, so it was stopped. The file "
            "may be malformed in a way that makes the parser loop: re-export it (for example "
            "print it to a new PDF) and upload it again. A very large but healthy file needs "
            "a higher limit (SHEAF_EXTRACT_TIMEOUT_SECONDS).",
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


def _unpack(reply: tuple[Any, ...]) -> list[Page]:
    kind = reply[0]
    if kind == "pages":
        return [Page(number, text) for number, text in reply[1]]
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
            path, content_type = conn.recv()
        except (EOFError, OSError):
            return
        try:
            sent = _reply(conn, _answer(extractor, Path(path), content_type))
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


def _answer(extractor: Extractor, path: Path, content_type: str) -> tuple[Any, ...]:
    try:
        pages = extractor.extract(path, content_type)
    except MemoryError:
        raise
    except PermanentError as exc:
        return ("refused", exc.code, exc.message)
    except Exception:
        return ("failed", traceback.format_exc(limit=20))
    return ("pages", [(page.number, page.text) for page in pages])


def _exit_with_parent(lifeline: Connection) -> None:
    """Block on the lifeline; its EOF means the parent is gone, so go too."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(0)
