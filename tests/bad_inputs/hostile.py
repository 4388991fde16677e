"""A test hook for what no real input does to the current parsers: crash the interpreter.

`HostileExtractor` wraps `LocalExtractor` and obeys a command written at the start of
the file, so a test can make the child process segfault, abort, loop, sleep or exhaust
its memory on demand, and learn which child served it. Any other file is extracted
normally. It lives in an importable module (not a test file) because the `spawn` start
method unpickles it in the child.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sheaf.domain.models import Page
from sheaf.extract import LocalExtractor

PREFIX = b"#hostile:"


def command(name: str, *args: object) -> bytes:
    """The bytes of a file that tells `HostileExtractor` to do `name` (a text file).

    Only the first line counts: append anything after it to make the bytes unique."""
    return PREFIX + " ".join([name, *map(str, args)]).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class HostileExtractor:
    inner: LocalExtractor = field(default_factory=LocalExtractor)

    def extract(self, path: Path, content_type: str) -> Iterable[Page]:
        with path.open("rb") as file:
            head = file.read(200)
        if not head.startswith(PREFIX):
            return self.inner.extract(path, content_type)
        name, *args = head[len(PREFIX) :].split(b"\n", 1)[0].decode().split()
        if name == "pages":
            return _pages(int(args[0]), float(args[1]))
        text = _ACTIONS[name](*args)
        return [Page(1, text)]


def _pages(count: int, seconds: float) -> Iterator[Page]:
    """A slow but steady parser: `count` pages, one every `seconds`."""
    for number in range(1, count + 1):
        time.sleep(seconds)
        yield Page(number, f"page {number} of {count} from {os.getpid()}")


def _big(chars: str) -> str:
    return "w" * int(chars)


def _pid() -> str:
    return str(os.getpid())


def _sleep(seconds: str) -> str:
    time.sleep(float(seconds))
    return f"slept {seconds} in {os.getpid()}"


def _loop() -> str:
    while True:
        pass


def _segfault() -> str:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    return "unreachable"


def _abort() -> str:
    os.abort()


def _hog() -> str:
    """Allocate 64 MiB at a time until the address-space limit stops it."""
    hoard = []
    while True:
        hoard.append(bytearray(64 * 1024 * 1024))


def _bug() -> str:
    raise ValueError("a bug in the extractor, not in the file")


_ACTIONS = {
    "pid": _pid,
    "big": _big,
    "sleep": _sleep,
    "loop": _loop,
    "segfault": _segfault,
    "abort": _abort,
    "hog": _hog,
    "bug": _bug,
}
