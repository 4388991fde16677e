"""Upload path: MiB/s and the API process's peak memory while it takes large files.

`sheaf api` alone (no workers, so nothing but the upload runs) receives generated text
files of 1 MiB, 100 MiB and 1 GiB over HTTP (multipart, streamed from disk by aiohttp's
client), once with the local blob directory and once with Azurite. Peak RSS growth is the
API's highest resident memory during the upload (kernel high-water mark, reset before
each upload through /proc/PID/clear_refs, and sampled every 10 ms as a cross-check) minus
its resident memory just before; a 1 MiB warm-up upload first loads whatever is loaded
lazily.

References for the throughput: for the local store, a bare aiohttp server in its own
process that streams the multipart body to a file and fsyncs it (the least an HTTP upload
to disk can do); for Azurite, the Azure SDK's own `upload_blob` from this process, straight
from the file (no HTTP hop through an API at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient

from bench.harness import Context, Stopwatch, median, percent, ratio
from bench.sheafproc import (
    RssSampler,
    SheafProcess,
    free_port,
    peak_rss,
    reset_peak_rss,
    rss_bytes,
    wait_ready,
)

NAME = "upload"
TITLE = "3. Upload path: throughput and the API's peak memory"
MiB = 1024 * 1024
RSS_TARGET = 64 * MiB
MAX_UPLOAD = 4 * 1024 * MiB


@dataclass(frozen=True)
class Plan:
    sizes: tuple[tuple[int, int], ...]  # (bytes, repetitions)


QUICK = Plan(sizes=((1 * MiB, 3), (100 * MiB, 1), (1024 * MiB, 1)))
FULL = Plan(sizes=((1 * MiB, 10), (100 * MiB, 3), (1024 * MiB, 2)))


@dataclass
class Measured:
    backend: str
    size: int
    seconds: list[float]
    growth: list[int]  # peak RSS growth per upload, bytes
    reference_seconds: list[float]

    @property
    def rate(self) -> float:
        return self.size / MiB / median(self.seconds)

    @property
    def reference_rate(self) -> float | None:
        if not self.reference_seconds:
            return None
        return self.size / MiB / median(self.reference_seconds)


Reference = Callable[[Path], Awaitable[float]]  # seconds the reference takes for a file


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    files = {size: _generate(ctx.workdir, size) for size, _ in plan.sizes}
    results: list[Measured] = []
    with _bare_server(ctx.workdir / "bare-uploads") as bare_url:
        reference = _bare_reference(bare_url)
        results += await _backend(ctx, plan, files, "local", {}, reference)
    with contextlib.ExitStack() as stack:
        azurite = _start_azurite(ctx, stack)
        if azurite is not None:
            settings = {
                "SHEAF_BLOB_BACKEND": "azure",
                "SHEAF_AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
                "SHEAF_AZURE_STORAGE_CONTAINER": "bench",
            }
            reference = _sdk_reference(azurite.connection_string)
            results += await _backend(ctx, plan, files, "azurite", settings, reference)
    _report(ctx, results)


def _start_azurite(ctx: Context, stack: contextlib.ExitStack) -> Any:
    """A running Azurite (tests.azurite_fixtures), or None with the reason noted."""
    import pytest

    from tests.azurite_fixtures import run_azurite

    directory = ctx.workdir / "azurite"
    directory.mkdir(exist_ok=True)
    try:
        return stack.enter_context(run_azurite(directory))
    except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
        ctx.note(f"Azurite rows skipped: {exc}")
        return None


def _generate(directory: Path, size: int) -> Path:
    """A text file of exactly `size` bytes, unique by its first line."""
    path = directory / f"upload-{size // MiB}MiB.txt"
    line = b"the quick brown fox jumps over the lazy dog, and then it uploads a document\n"
    block = line * (MiB // len(line) + 1)
    with path.open("wb") as out:
        header = f"benchmark upload of {size} bytes made at {time.time_ns()}\n".encode()
        out.write(header)
        left = size - len(header)
        while left > 0:
            piece = block[: min(left, len(block))]
            out.write(piece)
            left -= len(piece)
    return path


async def _backend(
    ctx: Context,
    plan: Plan,
    files: dict[int, Path],
    backend: str,
    extra: dict[str, str],
    reference: Reference,
) -> list[Measured]:
    run_dir = ctx.workdir / f"api-{backend}"
    run_dir.mkdir()
    port = free_port()
    settings = {
        "SHEAF_DATABASE_URL": f"sqlite+aiosqlite:///{run_dir / 'sheaf.db'}",
        "SHEAF_BLOB_DIR": str(run_dir / "blobs"),
        "SHEAF_PORT": str(port),
        "SHEAF_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "SHEAF_LOG_FORMAT": "json",
        **extra,
    }
    SheafProcess(["db", "upgrade"], settings, run_dir, run_dir / "db.log").wait(timeout=120)
    api = SheafProcess(["api"], settings, run_dir, run_dir / "api.log")
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        await wait_ready(url, api)
        await _upload(url, files[min(files)], "warmup")  # lazy imports, pools, the container
        for size, repetitions in plan.sizes:
            ctx.progress(f"{backend}: {size // MiB} MiB x {repetitions}")
            measured = Measured(backend, size, [], [], [])
            for n in range(repetitions):
                with ctx.spied(api.pid, f"upload-{backend}-{size // MiB}MiB-{n}"):
                    seconds, growth = await _measured_upload(
                        url, api.pid, files[size], f"{backend}-{n}"
                    )
                measured.seconds.append(seconds)
                measured.growth.append(growth)
                measured.reference_seconds.append(await reference(files[size]))
            results.append(measured)
    finally:
        api.stop()
    return results


async def _measured_upload(url: str, pid: int, path: Path, collection: str) -> tuple[float, int]:
    reset_peak_rss(pid)
    await asyncio.sleep(0.2)
    before = rss_bytes(pid)
    with RssSampler(pid) as sampler:
        clock = Stopwatch()
        await _upload(url, path, collection)
        seconds = clock.seconds
    return seconds, max(sampler.peak, peak_rss(pid)) - before


async def _upload(url: str, path: Path, collection: str) -> None:
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with path.open("rb") as stream:
            form = aiohttp.FormData()
            form.add_field("file", stream, filename=path.name)
            async with session.post(f"{url}/v1/collections/{collection}/documents", data=form) as r:
                body = await r.text()
                if r.status not in (200, 202):
                    raise RuntimeError(f"upload of {path.name}: {r.status} {body[:500]}")


# -- references ------------------------------------------------------------------------


def _bare_reference(url: str) -> Reference:
    async def upload(path: Path) -> float:
        clock = Stopwatch()
        await _upload(url, path, "bare")
        return clock.seconds

    return upload


def _sdk_reference(connection_string: str) -> Reference:
    async def upload(path: Path) -> float:
        async with BlobServiceClient.from_connection_string(connection_string) as service:
            container = service.get_container_client("reference")
            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
            blob = container.get_blob_client(f"reference-{time.time_ns()}")
            clock = Stopwatch()
            with path.open("rb") as stream:
                await blob.upload_blob(stream, overwrite=True)
            seconds = clock.seconds
            await blob.delete_blob()
            return seconds

    return upload


@contextlib.contextmanager
def _bare_server(directory: Path) -> Iterator[str]:
    directory.mkdir(exist_ok=True)
    port = free_port()
    context = multiprocessing.get_context("spawn")
    proc = context.Process(target=_serve_bare, args=(port, str(directory)), daemon=True)
    proc.start()
    try:
        _wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.join(10)


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("the bare upload server did not start")


def _serve_bare(port: int, directory: str) -> None:
    """A minimal upload endpoint: multipart → file → fsync → 202."""

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader)
        path = Path(directory) / f"{time.time_ns()}"
        with path.open("wb") as out:
            while block := await part.read_chunk(256 * 1024):
                await asyncio.to_thread(out.write, block)
            await asyncio.to_thread(os.fsync, out.fileno())
        path.unlink()
        return web.json_response({"ok": True}, status=202)

    app = web.Application(client_max_size=MAX_UPLOAD)
    app.router.add_post("/v1/collections/{collection}/documents", upload)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# -- report ----------------------------------------------------------------------------


def _report(ctx: Context, results: list[Measured]) -> None:
    rows = []
    for m in results:
        growth = max(m.growth)
        rows.append(
            [
                m.backend,
                f"{m.size // MiB} MiB",
                len(m.seconds),
                m.rate,
                m.reference_rate,
                percent(ratio(m.rate, m.reference_rate)),
                growth / MiB,
                percent(growth / RSS_TARGET),
            ]
        )
    ctx.table(
        "uploads through `sheaf api` (median MiB/s; largest peak RSS growth)",
        [
            "blob store",
            "file",
            "uploads",
            "Sheaf MiB/s",
            "reference MiB/s",
            "Sheaf ÷ reference",
            "peak RSS growth MiB",
            "÷ 64 MiB target",
        ],
        rows,
    )
    for m in results:
        if m.size >= 1024 * MiB:
            growth = max(m.growth)
            verdict = (
                "met" if growth < RSS_TARGET else f"MISSED by {(growth - RSS_TARGET) / MiB:.0f} MiB"
            )
            ctx.note(
                f"Target ({m.backend}, 1 GiB): peak RSS growth under 64 MiB — measured "
                f"{growth / MiB:.1f} MiB: {verdict}."
            )
