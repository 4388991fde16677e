"""`IsolatedExtractor`: a pool of child processes under time and memory limits.

The child's behaviour is driven by `tests.bad_inputs.hostile`: a file that says
`#hostile:segfault` makes the child segfault, and so on; other files are real documents.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sheaf.domain.chunking import DocumentChunks
from sheaf.domain.models import Chunking, ContentType, Page
from sheaf.errors import ExtractionError, PermanentError, TransientError
from sheaf.extract import LocalExtractor
from sheaf.extract.isolated import IsolatedExtractor, _serve
from tests.bad_inputs import pdf
from tests.bad_inputs.hostile import HostileExtractor, command

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEXT = ContentType.TEXT.value
PDF = ContentType.PDF.value
MiB = 1024 * 1024


Write = Callable[[bytes], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write bytes to a new file of this test's own."""
    count = iter(range(1_000_000))

    def run(data: bytes) -> Path:
        path = tmp_path / f"file-{next(count)}"
        path.write_bytes(data)
        return path

    return run


def isolated(timeout: float = 10, memory: int = 512 * MiB, processes: int = 1) -> IsolatedExtractor:
    return IsolatedExtractor(timeout, memory, processes, extractor=HostileExtractor())


def served_by(extractor: IsolatedExtractor, path: Path) -> int:
    [page] = list(extractor.extract(path, TEXT))
    return int(page.text.split()[-1])


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody has reaped yet (an orphan's fate in some containers)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_pages_are_those_of_the_local_extractor(write: Write) -> None:
    path = write(pdf.healthy("Pages cross the process boundary"))
    with isolated() as extractor:
        assert list(extractor.extract(path, PDF)) == list(LocalExtractor().extract(path, PDF))
        assert list(extractor.extract(path, PDF)) == [Page(1, "Pages cross the process boundary")]


def test_one_child_serves_document_after_document(write: Write) -> None:
    with isolated() as extractor:
        first = served_by(extractor, write(command("pid")))
        assert served_by(extractor, write(command("pid"))) == first
        assert extractor.pids() == [first]


def test_the_files_own_errors_pass_through_and_keep_the_child(write: Write) -> None:
    with isolated() as extractor:
        pid = served_by(extractor, write(command("pid")))
        with pytest.raises(ExtractionError) as caught:
            list(extractor.extract(write(pdf.encrypted()), PDF))
        assert caught.value.code == "encrypted"
        assert "password" in caught.value.message
        assert served_by(extractor, write(command("pid"))) == pid


def test_a_bug_in_the_extractor_is_not_the_files_fault(write: Write) -> None:
    """Not an ExtractionError: the worker retries it like any unexpected error."""
    with isolated() as extractor:
        with pytest.raises(RuntimeError, match="ValueError: a bug in the extractor"):
            list(extractor.extract(write(command("bug")), TEXT))
        with pytest.raises(RuntimeError, match="FileNotFoundError"):
            list(extractor.extract(Path(str(write(b"x")) + "-missing"), TEXT))


@pytest.mark.parametrize(("action", "signal_name"), [("segfault", "SIGSEGV"), ("abort", "SIGABRT")])
def test_a_crashing_child_fails_the_document_and_is_replaced(
    write: Write,
    action: str,
    signal_name: str,
) -> None:
    with isolated() as extractor:
        before = served_by(extractor, write(command("pid")))
        with pytest.raises(ExtractionError) as caught:
            list(extractor.extract(write(command(action)), TEXT))
        assert caught.value.code == "parser_crash"
        assert signal_name in caught.value.message
        assert gone(before)
        after = served_by(extractor, write(command("pid")))
        assert after != before
        assert extractor.pids() == [after]


def test_a_hanging_parser_is_stopped_at_the_time_limit(write: Write) -> None:
    with isolated(timeout=1.0) as extractor:
        pid = served_by(extractor, write(command("pid")))
        started = time.monotonic()
        with pytest.raises(ExtractionError) as caught:
            list(extractor.extract(write(command("loop")), TEXT))
        elapsed = time.monotonic() - started
        assert caught.value.code == "timeout"
        assert 1.0 <= elapsed < 3.0  # the limit, plus killing the child on a busy machine
        assert gone(pid)
        assert served_by(extractor, write(command("pid"))) != pid


def test_pages_stream_and_the_time_limit_is_per_page(write: Write) -> None:
    """Six pages at 0.4 s each take 2.4 s, over the 1 s limit: each page resets it."""
    with isolated(timeout=1.0) as extractor:
        started = time.monotonic()
        pages = extractor.extract(write(command("pages", 6, 0.4)), TEXT)
        first = next(iter(pages))
        assert time.monotonic() - started < 2.0  # page 1 arrived before the others were read
        assert first.text.startswith("page 1 of 6")
        rest = list(pages)
        assert [page.number for page in rest] == [2, 3, 4, 5, 6]
        assert time.monotonic() - started >= 2.4


def test_a_long_page_crosses_in_bounded_pieces(write: Write) -> None:
    with IsolatedExtractor(10, 512 * MiB, 1, extractor=HostileExtractor(), piece_chars=1000) as ex:
        pieces = list(ex.extract(write(command("big", 4500)), TEXT))
    assert [len(piece.text) for piece in pieces] == [1000, 1000, 1000, 1000, 500]
    assert {piece.number for piece in pieces} == {1}


def test_closing_the_pages_early_replaces_the_child(write: Write) -> None:
    with isolated() as extractor:
        pages = iter(extractor.extract(write(command("pages", 100, 0.01)), TEXT))
        first = next(pages)
        pid = int(first.text.split()[-1])
        pages.close()  # type: ignore[attr-defined]
        assert gone(pid)
        assert served_by(extractor, write(command("pid"))) != pid


def chunking(size: int = 300, overlap: int = 40, batch: int = 7, max_pages: int = 100) -> Chunking:
    return Chunking(size, overlap, batch, max_pages)


def test_chunks_made_in_the_child_are_those_made_from_its_pages(write: Write) -> None:
    """The child chunks (`extract_chunks`) exactly as the worker would from the pages it
    sends in pieces (`extract`), batch for batch, and reports every page it reads."""
    words = [f"word{n % 97}" + ("\n" if n % 13 == 0 else "") for n in range(8000)]
    path = write(" ".join(words).encode())
    with IsolatedExtractor(10, 512 * MiB, 1, extractor=HostileExtractor(), piece_chars=1000) as ex:
        read: list[int] = []
        made = list(ex.extract_chunks(path, TEXT, chunking(), lambda: read.append(1)))
        here = list(DocumentChunks(ex.extract(path, TEXT), chunking()).batches())
    assert [(b.chunks, b.pages) for b in made] == [(b.chunks, b.pages) for b in here]
    assert [len(batch.chunks) for batch in made[:-1]] == [7] * (len(made) - 1)
    assert made[-1].pages == 1
    assert len(read) == len(list(HostileExtractor().extract(path, TEXT)))  # every page read


def test_a_page_limit_in_the_child_fails_as_too_many_pages(write: Write) -> None:
    with isolated() as extractor:
        pid = served_by(extractor, write(command("pid")))
        pages = write(command("pages", 6, 0.01))
        with pytest.raises(PermanentError) as caught:
            list(extractor.extract_chunks(pages, TEXT, chunking(max_pages=3), lambda: None))
        assert caught.value.code == "too_many_pages"
        assert served_by(extractor, write(command("pid"))) == pid  # the file's fault: kept


def test_pages_that_make_no_chunk_yet_still_count_as_progress(write: Write) -> None:
    """Six pages at 0.4 s each, all in one chunk: nothing to send for 2.4 s but the pages
    read, each of which resets the 1 s limit."""
    with isolated(timeout=1.0) as extractor:
        read: list[float] = []
        batches = list(
            extractor.extract_chunks(
                write(command("pages", 6, 0.4)), TEXT, chunking(size=1000), lambda: read.append(1)
            )
        )
    assert [len(batch.chunks) for batch in batches] == [1]
    assert batches[0].pages == 6
    assert len(read) == 6


def test_a_documents_last_chunks_free_its_child(write: Write) -> None:
    """With one child, a second document is served while the first one's last batch is
    still being used (embedded and written, in a worker): the child is not held for it."""
    with isolated(processes=1) as extractor:
        batches = extractor.extract_chunks(
            write(b"one short document"), TEXT, chunking(), lambda: None
        )
        [only] = [next(batches)]
        served: list[int] = []
        other = threading.Thread(
            target=lambda: served.append(served_by(extractor, write(command("pid"))))
        )
        other.start()
        other.join(10)
        assert served, "the second document waited for the first one's child"
        assert [chunk.text for chunk in only.chunks] == ["one short document"]
        assert list(batches) == []


def test_memory_beyond_the_limit_fails_as_memory_limit(write: Write) -> None:
    with isolated(memory=300 * MiB) as extractor:
        started = time.monotonic()
        with pytest.raises(ExtractionError) as caught:
            list(extractor.extract(write(command("hog")), TEXT))
        assert caught.value.code == "memory_limit"
        assert time.monotonic() - started < 5
        assert served_by(extractor, write(command("pid"))) > 0  # a fresh child took over


def test_threads_share_the_pool_and_never_exceed_it(write: Write) -> None:
    paths = [write(command("sleep", 0.3)) for _ in range(8)]
    results: list[str] = []
    errors: list[BaseException] = []

    def call(extractor: IsolatedExtractor, path: Path) -> None:
        try:
            [page] = list(extractor.extract(path, TEXT))
            results.append(page.text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with isolated(processes=2) as extractor:
        for path in paths[:2]:  # start both children first: spawning is not what is measured
            call(extractor, path)
        results.clear()
        threads = [threading.Thread(target=call, args=(extractor, p)) for p in paths]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert errors == []
        pids = {text.split()[-1] for text in results}
        assert len(results) == 8
        assert len(pids) == 2
        assert elapsed >= 4 * 0.3  # never more than two at a time: at least four rounds


def test_warm_starts_the_whole_pool_and_documents_use_it(write: Write) -> None:
    with isolated(processes=2) as extractor:
        assert extractor.pids() == []
        assert extractor.warm() == 2
        warmed = extractor.pids()
        assert len(warmed) == 2
        served = {served_by(extractor, write(command("pid"))) for _ in range(4)}
        assert served <= set(warmed)
        assert extractor.warm() == 2  # already warm: nothing more starts
        assert extractor.pids() == warmed


def test_warm_while_documents_run_never_exceeds_the_pool(write: Write) -> None:
    with isolated(processes=2) as extractor:
        busy = threading.Thread(target=served_by, args=(extractor, write(command("sleep", 0.5))))
        busy.start()
        time.sleep(0.2)  # the document holds one slot
        assert extractor.warm() == 1
        busy.join()
        assert len(extractor.pids()) == 2


def test_close_leaves_no_process_behind(write: Write) -> None:
    extractor = isolated(processes=3)
    threads = [
        threading.Thread(target=served_by, args=(extractor, write(command("sleep", 0.5))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pids = extractor.pids()
    assert len(pids) == 3
    extractor.close()
    assert all(gone(pid) for pid in pids)
    assert extractor.pids() == []
    with pytest.raises(TransientError):
        list(extractor.extract(write(command("pid")), TEXT))


class Call(threading.Thread):
    """`extract` running in a thread, started and under way; `error` is what it raised."""

    def __init__(self, extractor: IsolatedExtractor, path: Path) -> None:
        super().__init__()
        self.extractor = extractor
        self.path = path
        self.error: BaseException | None = None
        warm_up = path.with_name("warm-up")
        warm_up.write_bytes(command("pid"))
        list(extractor.extract(warm_up, TEXT))  # a child is up and idle now
        self.start()
        time.sleep(0.3)  # the child has the file by now

    def run(self) -> None:
        try:
            list(self.extractor.extract(self.path, TEXT))
        except BaseException as exc:
            self.error = exc


def test_a_child_stopped_from_outside_is_not_the_files_fault(write: Write) -> None:
    with isolated() as extractor:
        call = Call(extractor, write(command("sleep", 30)))
        assert call.is_alive()
        os.kill(extractor.pids()[0], signal.SIGTERM)
        call.join(10)
        assert isinstance(call.error, TransientError)
        assert call.error.code == "extractor_lost"
        assert "SIGTERM" in call.error.message


def test_close_during_a_call_is_not_the_files_fault(write: Write) -> None:
    extractor = isolated()
    call = Call(extractor, write(command("sleep", 30)))
    extractor.close()
    call.join(10)
    assert isinstance(call.error, TransientError)
    assert call.error.code == "extractor_closed"


PARENT = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from sheaf.extract.isolated import IsolatedExtractor, _serve
    from tests.bad_inputs.hostile import HostileExtractor, command

    extractor = IsolatedExtractor(600, 512 * 1024 * 1024, 1, extractor=HostileExtractor())
    path = Path(sys.argv[1])
    path.write_bytes(command("loop"))
    threading.Thread(target=lambda: list(extractor.extract(path, "text/plain"))).start()
    while not extractor.pids():
        pass
    print(extractor.pids()[0], flush=True)
    threading.Event().wait()
    """
)


def test_children_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "loop.txt")],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(0.5)  # the child is busy looping now
        assert not gone(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while not gone(child):
        assert time.monotonic() < deadline, f"child {child} outlived its parent"
        time.sleep(0.05)


@pytest.mark.parametrize("gone_while", ["starting", "parsing"])
def test_a_child_whose_parent_went_away_exits_quietly(
    gone_while: str, write: Write, capfd: pytest.CaptureFixture[str]
) -> None:
    """A worker SIGKILLed while its child starts or parses: the child's reply finds the
    pipe closed. It must exit cleanly, not print a traceback into the log of the worker
    being restarted (the chaos run found dozens of `BrokenPipeError` tracebacks)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    lifeline, kept_open = context.Pipe(duplex=False)  # held open: the reply path is tested
    child = context.Process(
        target=_serve, args=(theirs, lifeline, HostileExtractor(), 512 * MiB), daemon=True
    )
    child.start()
    theirs.close()
    lifeline.close()
    if gone_while == "parsing":
        assert ours.poll(30)
        assert ours.recv() == "ready"
        ours.send((str(write(command("sleep", 1))), TEXT, 1000, None))
    ours.close()  # the parent is gone before the child's reply
    child.join(30)
    kept_open.close()
    assert child.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err
