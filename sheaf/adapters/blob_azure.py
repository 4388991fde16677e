"""Azure Blob Storage: where uploaded originals live when Sheaf runs in Azure.

A write streams the upload as ~4 MiB staged blocks and publishes them with one
`commit_block_list`. Staged blocks are invisible until that commit, so a reader sees the
old blob or the whole new one, never a partial one, and an upload that fails or is
cancelled before the commit leaves no blob at all (the service discards uncommitted
blocks by itself after a week). Memory stays at a couple of blocks' worth however large
the upload (about 10 MiB for 50 MiB, measured in tests/integration/test_blob_azure.py).
Downloads stream into the destination file in 4 MiB ranged GETs the same way.

The container is dedicated to Sheaf: `list` reports every blob whose name is a valid key,
and the orphan collector deletes those no document names. It is created on first use.

SDK errors are translated here, with `raise ... from exc`, after the SDK's own
exponential retries (`retry_total`) have been spent:

    ResourceNotFoundError (404)          BlobNotFound from `download`; ignored by `delete`
                                         and `list` (a missing container holds no blobs)
    401/403, ClientAuthenticationError   StoreUnavailable, code `blob_store_forbidden`: the
                                         message names the missing role or the bad key
    anything else (connection, 5xx, …)   StoreUnavailable: worth retrying later

Access denied is a `StoreUnavailable` rather than a `PermanentError` on purpose: it is
fixed by configuring the store, not by changing the document, so documents wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

from sheaf.domain.blobkeys import validate_blob_key
from sheaf.errors import BlobNotFound, StoreUnavailable
from sheaf.ports import BlobInfo

__all__ = ["AzureBlobStore"]

MiB = 1024 * 1024
BLOCK_SIZE = 4 * MiB  # per staged block, and per ranged GET of a download
REQUIRED_ROLE = "Storage Blob Data Contributor"
_CONTENT_SETTINGS = ContentSettings(content_type="application/octet-stream")


class AzureBlobStore:
    """`BlobStore` over one container of an Azure Storage account.

    Build it with `from_connection_string` or `from_account_url`; `close` releases the
    HTTP session but never the credential, which belongs to whoever passed it in.
    """

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._service = service
        self._container = service.get_container_client(container)
        self._where = (
            f"Azure Blob Storage container {container!r} of account "
            f"{service.account_name!r} ({service.primary_endpoint})"
        )
        self._container_ready = False
        self._container_lock = asyncio.Lock()

    @classmethod
    def from_connection_string(
        cls, connection_string: str, container: str, *, retry_total: int = 3
    ) -> Self:
        """Shared-key access, e.g. Azurite or an account whose keys are allowed."""
        client = BlobServiceClient.from_connection_string(
            connection_string, **_client_options(retry_total)
        )
        return cls(client, container)

    @classmethod
    def from_account_url(
        cls,
        account_url: str,
        credential: AsyncTokenCredential,
        container: str,
        *,
        retry_total: int = 3,
    ) -> Self:
        """Entra ID access (managed identity): the identity needs `REQUIRED_ROLE`."""
        client = BlobServiceClient(account_url, credential, **_client_options(retry_total))
        return cls(client, container)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Stage the stream block by block, then commit it; nothing is visible before.

        An exception from `chunks` propagates unchanged and leaves no blob. `metadata`
        names must be ASCII identifiers and values ASCII (they travel as HTTP headers);
        the SHA-256 of the stored bytes is always added as `sha256`.
        """
        blob = self._container.get_blob_client(validate_blob_key(key))
        _check_metadata(metadata)
        upload = uuid.uuid4().hex  # block ids of concurrent uploads to one key never clash
        blocks: list[BlobBlock] = []
        size = 0
        digest = hashlib.sha256()  # of the bytes actually stored, kept in the blob's metadata
        with self._translated(f"store blob {key!r}"):
            await self._ensure_container()
            try:
                async with contextlib.aclosing(_blocks(chunks, BLOCK_SIZE)) as stream:
                    async for block in stream:
                        block_id = f"{upload}-{len(blocks):06d}"  # equal lengths, as required
                        await blob.stage_block(block_id, block, length=len(block))
                        blocks.append(BlobBlock(block_id))
                        size += len(block)
                        digest.update(block)
                        del block  # not held while the next one is gathered
                await blob.commit_block_list(
                    blocks,
                    content_settings=_CONTENT_SETTINGS,
                    metadata={**(metadata or {}), "sha256": digest.hexdigest()},
                )
            except ResourceNotFoundError:
                self._container_ready = False  # deleted under us: the next put recreates it
                raise
        return size

    async def download(self, key: str, dest: Path) -> int:
        blob = self._container.get_blob_client(validate_blob_key(key))
        with self._translated(f"download blob {key!r}"):
            try:
                # Only the chunk iterator is kept: the downloader would pin the first chunk.
                chunks = (await blob.download_blob()).chunks()
                return await _save(chunks, dest)
            except ResourceNotFoundError as exc:  # never there, or deleted while we read
                raise BlobNotFound(f"no blob with key {key!r}") from exc

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing blob is not an error."""
        blob = self._container.get_blob_client(validate_blob_key(key))
        with self._translated(f"delete blob {key!r}"), contextlib.suppress(ResourceNotFoundError):
            await blob.delete_blob(delete_snapshots="include")

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Committed blobs whose key starts with `prefix`, fetched one page at a time.

        Blobs whose names are not valid keys were not written by Sheaf and are skipped.
        """
        pages = self._container.list_blobs(name_starts_with=prefix or None).by_page()
        while True:
            with self._translated("list blobs"):
                try:
                    page = [blob async for blob in await anext(pages)]
                except (StopAsyncIteration, ResourceNotFoundError):
                    return
            for blob in page:
                if _is_valid_key(blob.name):
                    yield _info(blob)

    async def ping(self) -> None:
        """Readiness: one attempt to read the container's properties (creating it if absent).

        Not retried: a readiness probe asks again anyway, and must answer quickly.
        """
        with self._translated("read the container's properties"):
            try:
                await self._container.get_container_properties(retry_total=0)
            except ResourceNotFoundError:
                self._container_ready = False
                await self._ensure_container()
            else:
                self._container_ready = True

    async def close(self) -> None:
        """Close the HTTP session; the credential stays open for its owner to close."""
        await self._service.close()

    async def _ensure_container(self) -> None:
        """Create the container once per process if it does not exist yet.

        It is looked up before being created so that an identity whose role is granted on
        the container alone (and so may not create containers) still works.
        """
        if self._container_ready:
            return
        async with self._container_lock:
            if not self._container_ready:  # another task may have done it while we waited
                await self._create_container_if_absent()
                self._container_ready = True

    async def _create_container_if_absent(self) -> None:
        if not await self._container.exists():
            with contextlib.suppress(ResourceExistsError):  # another process won the race
                await self._container.create_container()

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn any SDK error escaping the block into a `StoreUnavailable` naming the store."""
        try:
            yield
        except AzureError as exc:
            raise self._unavailable(action, exc) from exc

    def _unavailable(self, action: str, exc: AzureError) -> StoreUnavailable:
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        if isinstance(exc, ClientAuthenticationError) and exc.response is None:
            return StoreUnavailable(
                f"{self._where}: cannot {action}: no access token could be obtained "
                f"({_first_line(exc)}). Check the managed identity or the credential Sheaf "
                "was configured with.",
                code="blob_store_forbidden",
            )
        if status in (401, 403):
            return StoreUnavailable(
                f"{self._where}: access denied (HTTP {status} {_error_code(exc)}) trying to "
                f"{action}. If Sheaf signs in with Entra ID, grant its identity the "
                f"'{REQUIRED_ROLE}' role on the storage account or the container; if it uses "
                "a connection string, check the AccountKey in it.",
                code="blob_store_forbidden",
            )
        detail = f"HTTP {status} {_error_code(exc)}" if status else _first_line(exc)
        return StoreUnavailable(f"{self._where}: cannot {action}: {detail}")


def _client_options(retry_total: int) -> dict[str, Any]:
    """Options of every client: exponential retries (2 s, 4 s, 8 s … ± 1 s), 4 MiB GETs."""
    retry = ExponentialRetry(
        initial_backoff=0, increment_base=2, retry_total=retry_total, random_jitter_range=1
    )
    return {
        "retry_policy": retry,
        "max_single_get_size": BLOCK_SIZE,  # the first GET of a download, 32 MiB otherwise
        "max_chunk_get_size": BLOCK_SIZE,
    }


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup a stream into blocks of exactly `size` bytes (the last may be shorter).

    The buffer is replaced rather than trimmed after each block: a trimmed bytearray keeps
    its whole allocation, which would double what is held while the block is sent.
    """
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:
                block, rest = bytes(view[:size]), bytearray(view[size:])
            buffer = rest
            yield block
            del block  # gone before more is gathered: one block in memory, not two
    if buffer:
        yield bytes(buffer)


async def _save(chunks: AsyncIterator[bytes], dest: Path) -> int:
    """Write the chunks to `dest` from worker threads, so the event loop never waits on disk."""
    size = 0
    handle = await asyncio.to_thread(dest.open, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
            size += len(chunk)
            del chunk  # not held while the next one downloads
    finally:
        handle.close()  # synchronous: it must happen even while being cancelled
    return size


def _check_metadata(metadata: dict[str, str] | None) -> None:
    for name, value in (metadata or {}).items():
        if not (name.isascii() and name.isidentifier() and value.isascii()):
            raise ValueError(f"blob metadata {name!r}: {value!r} is not an ASCII name and value")


def _info(blob: BlobProperties) -> BlobInfo:
    return BlobInfo(key=blob.name, size=blob.size, modified=blob.last_modified.astimezone(UTC))


def _is_valid_key(name: str) -> bool:
    try:
        validate_blob_key(name)
    except ValueError:
        return False
    return True


def _error_code(exc: AzureError) -> str:
    """The service's error code, e.g. `AuthorizationPermissionMismatch`."""
    code = getattr(exc, "error_code", None) or type(exc).__name__
    return str(getattr(code, "value", code))  # the SDK gives a StorageErrorCode enum or str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
