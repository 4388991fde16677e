"""What only the Azure adapter has to prove, against Azurite: uploads stream as staged blocks
(memory stays flat however large the file), an abandoned upload commits nothing, and every
way the store can be out of reach surfaces as a `StoreUnavailable` an operator can act on.
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError
from azure.storage.blob.aio import ContainerClient

from sheaf.adapters.blob_azure import REQUIRED_ROLE, AzureBlobStore
from sheaf.errors import BlobNotFound, StoreUnavailable

if TYPE_CHECKING:
    from tests.azurite_fixtures import Azurite

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
KEY = "2026/11/05/0123456789abcdef0123456789abcdef"
LARGE = 50 * MiB
MEMORY_CEILING = 16 * MiB  # well under LARGE: at most a block or two may be held at once
WRONG_KEY = "d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSB0ZXN0cyBvZiBzaGVhZg=="


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def generated(size: int, digest: Any, chunk: int = MiB) -> AsyncIterator[bytes]:
    """`size` bytes made on the fly (never all in memory), fed to `digest` as they go."""
    pattern = bytes(range(256)) * (chunk // 256)
    for index in range(size // chunk):
        part = index.to_bytes(8, "big") + pattern[8:]
        digest.update(part)
        yield part


async def failing_after(size: int, error: BaseException) -> AsyncIterator[bytes]:
    yield b"x" * size
    raise error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


async def measured(call: Any) -> tuple[Any, int, float]:
    """Await `call`; return its result, peak traced Python memory, and seconds taken."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = await call
        return result, tracemalloc.get_traced_memory()[1], time.perf_counter() - started
    finally:
        tracemalloc.stop()


async def test_a_50_mb_upload_streams_in_blocks_with_flat_memory(
    azurite: Azurite, tmp_path: Path
) -> None:
    container = "sheaf-test-large"
    sent = hashlib.sha256()
    async with azurite.store(container) as store:
        size, put_peak, put_seconds = await measured(store.put(KEY, generated(LARGE, sent)))
        dest = tmp_path / "download"
        got, get_peak, get_seconds = await measured(store.download(KEY, dest))

        blocks = await block_list(azurite, container, KEY)

    print(  # shown with -s: the numbers the adapter's claims rest on
        f"\n50 MiB put: peak {put_peak / MiB:.1f} MiB in {put_seconds:.2f} s; "
        f"download: peak {get_peak / MiB:.1f} MiB in {get_seconds:.2f} s"
    )
    assert size == got == LARGE
    assert file_sha256(dest) == sent.hexdigest()
    assert put_peak < MEMORY_CEILING
    assert get_peak < MEMORY_CEILING
    assert blocks["committed"] == [4 * MiB] * 12 + [2 * MiB]
    assert blocks["uncommitted"] == []


async def test_a_failing_stream_commits_nothing(azurite: Azurite, tmp_path: Path) -> None:
    container = "sheaf-test-failing"
    error = ConnectionResetError("client went away")
    async with azurite.store(container) as store:
        with pytest.raises(ConnectionResetError) as raised:
            await store.put(KEY, failing_after(9 * MiB, error))

        assert raised.value is error  # the caller's own error, not a translated one
        assert [info async for info in store.list()] == []
        with pytest.raises(BlobNotFound):
            await store.download(KEY, tmp_path / "download")
        # Two full blocks were staged, and stay invisible until the service drops them.
        blocks = await block_list(azurite, container, KEY)
        assert blocks == {"committed": [], "uncommitted": [4 * MiB, 4 * MiB]}


async def test_put_sets_content_type_and_metadata(azurite: Azurite) -> None:
    container = "sheaf-test-metadata"
    async with azurite.store(container) as store:
        await store.put(KEY, stream(b"%PDF-"), metadata={"source": "upload"})

        async with admin(azurite, container) as client:
            properties = await client.get_blob_client(KEY).get_blob_properties()

    assert properties.content_settings.content_type == "application/octet-stream"
    # The adapter records the hash of what it stored, whatever the caller passed.
    assert properties.metadata == {
        "source": "upload",
        "sha256": hashlib.sha256(b"%PDF-").hexdigest(),
    }


async def test_metadata_that_cannot_be_a_header_is_refused_before_any_request(
    azurite: Azurite,
) -> None:
    async with azurite.store() as store:
        for metadata in ({"content-type": "x"}, {"name": "caf\u00e9"}):
            with pytest.raises(ValueError, match="blob metadata"):
                await store.put(KEY, stream(b"x"), metadata=metadata)

        assert [info async for info in store.list()] == []


async def test_a_container_deleted_under_the_store_is_recreated(azurite: Azurite) -> None:
    container = "sheaf-test-recreated"
    async with azurite.store(container) as store:
        await store.put(KEY, stream(b"first"))
        async with admin(azurite, container) as client:
            await client.delete_container()

        with pytest.raises(StoreUnavailable, match="ContainerNotFound"):
            await store.put(KEY, stream(b"second"))
        await store.put(KEY, stream(b"third"))  # as the worker's retry would

        assert [info.size async for info in store.list()] == [len(b"third")]


async def test_list_skips_blobs_sheaf_did_not_write(azurite: Azurite) -> None:
    container = "sheaf-test-foreign"
    async with azurite.store(container) as store:
        await store.put(KEY, stream(b"x"))
        async with admin(azurite, container) as client:
            await client.upload_blob("2026/with space", b"not ours")
            await client.upload_blob("2026/caf\u00e9", b"not ours")

        assert [info.key async for info in store.list()] == [KEY]


async def test_the_container_is_created_on_first_use(azurite: Azurite) -> None:
    container = "sheaf-test-first-use"
    async with azurite.store(container) as store:
        assert [info async for info in store.list()] == []  # absent: empty, not an error
        await store.delete(KEY)  # absent: nothing to delete, not an error

        await store.ping()

        async with admin(azurite, container) as client:
            assert await client.exists()


async def test_a_wrong_account_key_names_the_fix(azurite: Azurite, tmp_path: Path) -> None:
    store = AzureBlobStore.from_connection_string(
        azurite.connection_string_with_key(WRONG_KEY), "sheaf-test-denied", retry_total=0
    )
    try:
        for attempt in (
            store.ping(),
            store.put(KEY, stream(b"x")),
            store.download(KEY, tmp_path / "download"),
            store.delete(KEY),
            anext(store.list(), None),
        ):
            with pytest.raises(StoreUnavailable) as raised:
                await attempt
            message = raised.value.message
            assert raised.value.code == "blob_store_forbidden"
            assert "HTTP 403" in message
            assert f"'{REQUIRED_ROLE}' role" in message
            assert "AccountKey" in message
            assert "'devstoreaccount1'" in message
            assert "'sheaf-test-denied'" in message
            assert WRONG_KEY not in message
    finally:
        await store.close()


class UnavailableCredential:
    """An `AsyncTokenCredential` that, like DefaultAzureCredential off Azure, finds none."""

    closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise CredentialUnavailableError("ManagedIdentityCredential: no identity endpoint")

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> UnavailableCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def test_a_credential_without_a_token_is_unavailable_and_stays_open() -> None:
    credential = UnavailableCredential()
    # Nothing listens there: the token is asked for before any connection is made.
    store = AzureBlobStore.from_account_url(
        "https://127.0.0.1:9/", credential, "documents", retry_total=0
    )

    with pytest.raises(StoreUnavailable, match="no access token could be obtained") as raised:
        await store.ping()
    await store.close()

    assert raised.value.code == "blob_store_forbidden"
    assert "ManagedIdentityCredential" in raised.value.message
    assert not credential.closed  # the composition root owns and closes it


async def test_a_stopped_endpoint_is_unavailable(private_azurite: Azurite, tmp_path: Path) -> None:
    async with (
        private_azurite.store("sheaf-test-stopped", retry_total=0) as store,
        private_azurite.store("sheaf-test-stopped", retry_total=1) as retrying,
    ):
        await store.put(KEY, stream(b"body"))
        await store.ping()

        private_azurite.stop()

        started = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="'devstoreaccount1'") as raised:
            await store.ping()
        assert time.perf_counter() - started < 2  # readiness answers at once: no retries
        assert "'sheaf-test-stopped'" in raised.value.message
        assert raised.value.code == "store_unavailable"
        for call in (
            store.put(KEY, stream(b"again")),
            store.download(KEY, tmp_path / "download"),
            store.delete(KEY),  # idempotent, but an outage is not "already deleted"
            anext(store.list(), None),
        ):
            with pytest.raises(StoreUnavailable, match="'sheaf-test-stopped'"):
                await call

        started = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            await retrying.put(KEY, stream(b"again"))
        assert time.perf_counter() - started >= 1  # one retry, after a backoff of 2 ± 1 s


# -- helpers that look at the container behind the adapter's back -----------------------


def admin(azurite: Azurite, container: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, container)


async def block_list(azurite: Azurite, container: str, key: str) -> dict[str, list[Any]]:
    async with admin(azurite, container) as client:
        committed, uncommitted = await client.get_blob_client(key).get_block_list("all")
    return {
        "committed": [block.size for block in committed],
        "uncommitted": [block.size for block in uncommitted],
    }
