"""Azurite, the local Azure Storage emulator, as pytest fixtures.

`azurite` is one in-memory Azurite blob service for the whole session, on a free port;
`private_azurite` is one a test has to itself, so it may `stop()` it. `server.store()`
opens an `AzureBlobStore` on a container of its own and deletes that container afterwards,
so tests never see each other's blobs.

Azurite comes from npm: `npm ci` at the repository root puts the version pinned in
package.json into `node_modules/.bin`; one on PATH is used otherwise. Without it, tests
that need it are skipped with the reason shown, or fail under CI=true.

tests/conftest.py registers this file as a plugin (`pytest_plugins`); test modules reach
everything through the fixtures (importing it as well would defeat assertion rewriting).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from sheaf.adapters.blob_azure import AzureBlobStore
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
INSTALL_HINT = "run `npm install azurite` (or `npm ci`) at the repo root"
_LISTENING = re.compile(r"Blob service successfully listens on (http://\S+?):(\d+)")
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service: how to reach it, and how to stop it."""

    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    log: Path  # everything Azurite printed, for when a test needs to know why
    process: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        return self.connection_string_with_key(ACCOUNT_KEY)

    def connection_string_with_key(self, key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @contextlib.asynccontextmanager
    async def store(
        self, container: str | None = None, *, retry_total: int = 3
    ) -> AsyncIterator[AzureBlobStore]:
        """A store on a fresh container (the store creates it on first use), removed after."""
        container = container or f"sheaf-test-{uuid.uuid4().hex}"
        store = AzureBlobStore.from_connection_string(
            self.connection_string, container, retry_total=retry_total
        )
        try:
            yield store
        finally:
            await store.close()
            if self.process.poll() is None:
                await _delete_container(self.connection_string, container)

    def stop(self) -> None:
        """Stop the service (idempotent); its in-memory blobs are gone with it."""
        _stop(self.process)


def azurite_blob_command() -> str | None:
    local = ROOT / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@contextlib.contextmanager
def run_azurite(workdir: Path) -> Iterator[Azurite]:
    """Start Azurite in `workdir` (its log goes there), yield it, and stop it."""
    command = azurite_blob_command()
    if command is None:
        require_service("Azurite", INSTALL_HINT)
        raise AssertionError("unreachable: require_service skips or fails")
    log = workdir / "azurite.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                command,
                *("--blobHost", "127.0.0.1", "--blobPort", "0"),  # 0: let it pick a free port
                "--inMemoryPersistence",
                "--skipApiVersionCheck",  # the Python SDK may be newer than the emulator
                "--loose",
                "--disableTelemetry",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,  # a file, not a pipe: the access log must never fill and block it
            stderr=subprocess.STDOUT,
        )
    try:
        yield Azurite(blob_endpoint=_wait_for_endpoint(process, log), log=log, process=process)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_endpoint(process: subprocess.Popen[bytes], log: Path) -> str:
    """The endpoint Azurite announces once it listens on the port it chose."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if match := _LISTENING.search(output):
            return f"{match[1]}:{match[2]}/{ACCOUNT}"
        if process.poll() is not None:
            pytest.fail(f"Azurite exited with {process.returncode} on start:\n{output}")
        time.sleep(0.05)
    pytest.fail(f"Azurite did not listen within {_START_TIMEOUT:g} s:\n{log.read_text()}")


async def _delete_container(connection_string: str, container: str) -> None:
    async with ContainerClient.from_connection_string(connection_string, container) as admin:
        with contextlib.suppress(ResourceNotFoundError):
            await admin.delete_container()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session; tests isolate themselves with containers of their own."""
    with run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def private_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An Azurite of this test's own, which it may stop."""
    with run_azurite(tmp_path_factory.mktemp("azurite-private")) as server:
        yield server
