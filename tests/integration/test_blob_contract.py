"""The `BlobStore` contract, judged on every backend: the in-memory fake, a real directory
and Azure Blob Storage (Azurite, a container per test).

What the API and the worker rely on: an upload is stored whole or not at all (a stream
that fails or is cancelled leaves nothing, an overwrite is never seen half-written), keys
cannot escape the store, and missing blobs are reported as `BlobNotFound`.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sheaf.adapters.blob_local import LocalBlobStore, new_blob_key, validate_blob_key
from sheaf.errors import BlobNotFound, StoreUnavailable, UploadTooLarge
from sheaf.ports import BlobInfo, BlobStore
from sheaf.testing import InMemoryBlobStore

if TYPE_CHECKING:
    from tests.azurite_fixtures import Azurite

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
KEY = "2026/11/05/0123456789abcdef0123456789abcdef"
ESCAPING_KEYS = ["../x", "/etc/passwd", "a/../../b", "a\\b", "a\x00b"]
MALFORMED_KEYS = ["", "a//b", "a/./b", "a/", "./a", "..", "a b", "caf\u00e9", "a~b"]


@pytest.fixture(params=["memory", "local", "azurite"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "memory":
        yield InMemoryBlobStore()
    elif request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        azurite: Azurite = request.getfixturevalue("azurite")  # started only when needed
        async with azurite.store() as store:
            yield store


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing_stream(first: bytes, error: BaseException) -> AsyncIterator[bytes]:
    """An upload that dies part-way, like one over its size limit."""
    yield first
    raise error


async def gated_stream(
    first: bytes, rest: bytes, sent: asyncio.Event, go: asyncio.Event
) -> AsyncIterator[bytes]:
    """An upload in flight: `sent` is set once the store took `first`; `rest` waits for `go`."""
    yield first
    sent.set()  # resumed only when the store asks for more, i.e. has handled `first`
    await go.wait()
    yield rest


async def read(store: BlobStore, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / "download"
    size = await store.download(key, dest)
    body = dest.read_bytes()
    assert size == len(body)
    return body


async def listing(store: BlobStore, prefix: str = "") -> dict[str, BlobInfo]:
    return {info.key: info async for info in store.list(prefix)}


def files_on_disk(store: BlobStore) -> list[Path]:
    """Every file a local store left behind (none for the in-memory store)."""
    if not isinstance(store, LocalBlobStore) or not store.root.exists():
        return []
    return sorted(p for p in store.root.rglob("*") if p.is_file())


async def test_round_trip_of_a_multi_megabyte_stream(blobs: BlobStore, tmp_path: Path) -> None:
    body = random.Random(7).randbytes(5 * MiB + 123)
    parts = [body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]

    assert await blobs.put(KEY, stream(*parts)) == len(body)

    assert await read(blobs, KEY, tmp_path) == body


async def test_an_empty_blob_is_still_a_blob(blobs: BlobStore, tmp_path: Path) -> None:
    assert await blobs.put(KEY, stream()) == 0
    assert await read(blobs, KEY, tmp_path) == b""
    assert (await listing(blobs))[KEY].size == 0


async def test_failed_upload_leaves_nothing_behind(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(UploadTooLarge):
        await blobs.put(KEY, failing_stream(b"x" * 3 * MiB, UploadTooLarge("too big")))

    assert await listing(blobs) == {}
    assert files_on_disk(blobs) == []
    with pytest.raises(BlobNotFound):
        await blobs.download(KEY, tmp_path / "download")


async def test_cancelled_upload_leaves_nothing_behind(blobs: BlobStore) -> None:
    sent, go = asyncio.Event(), asyncio.Event()
    upload = asyncio.create_task(blobs.put(KEY, gated_stream(b"x" * 2 * MiB, b"y", sent, go)))
    await sent.wait()

    upload.cancel()  # the client disconnected mid-upload
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert await listing(blobs) == {}
    assert files_on_disk(blobs) == []


async def test_overwrite_is_atomic(blobs: BlobStore, tmp_path: Path) -> None:
    old, new = b"old" * 1000, b"n" * (2 * MiB) + b"ew"
    await blobs.put(KEY, stream(old))
    sent, go = asyncio.Event(), asyncio.Event()
    upload = asyncio.create_task(blobs.put(KEY, gated_stream(new[:-2], new[-2:], sent, go)))
    await sent.wait()

    assert await read(blobs, KEY, tmp_path) == old  # mid-upload: still the whole old blob
    assert {k: i.size for k, i in (await listing(blobs)).items()} == {KEY: len(old)}

    go.set()
    assert await upload == len(new)
    assert await read(blobs, KEY, tmp_path) == new
    assert {k: i.size for k, i in (await listing(blobs)).items()} == {KEY: len(new)}


async def test_failed_overwrite_keeps_the_old_blob(blobs: BlobStore, tmp_path: Path) -> None:
    await blobs.put(KEY, stream(b"old"))

    with pytest.raises(ConnectionResetError):
        await blobs.put(KEY, failing_stream(b"x" * 2 * MiB, ConnectionResetError()))

    assert await read(blobs, KEY, tmp_path) == b"old"
    assert len(files_on_disk(blobs)) == (1 if isinstance(blobs, LocalBlobStore) else 0)


async def test_delete_is_idempotent(blobs: BlobStore, tmp_path: Path) -> None:
    await blobs.put(KEY, stream(b"body"))

    await blobs.delete(KEY)
    await blobs.delete(KEY)
    await blobs.delete("never/written")

    assert await listing(blobs) == {}
    with pytest.raises(BlobNotFound):
        await blobs.download(KEY, tmp_path / "download")


async def test_download_of_a_missing_key_is_blob_not_found(
    blobs: BlobStore, tmp_path: Path
) -> None:
    await blobs.put("2026/11/05/present", stream(b"x"))

    for missing in ("2026/11/05/absent", "2026/11/05", "2026/11/05/present/deeper"):
        with pytest.raises(BlobNotFound):
            await blobs.download(missing, tmp_path / "download")


async def test_list_filters_by_prefix_and_reports_sizes(blobs: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    sizes = {"2026/11/01/a": 3, "2026/11/02/b": 5, "2026/12/01/c": 0, "2027/01/01/d": 1}
    for key, size in sizes.items():
        await blobs.put(key, stream(b"z" * size))

    everything = await listing(blobs)
    assert {key: info.size for key, info in everything.items()} == sizes
    assert {k: i.size for k, i in (await listing(blobs, "2026/11/")).items()} == {
        "2026/11/01/a": 3,
        "2026/11/02/b": 5,
    }
    assert set(await listing(blobs, "2026/1")) == {"2026/11/01/a", "2026/11/02/b", "2026/12/01/c"}
    assert set(await listing(blobs, "2026/11/01/a")) == {"2026/11/01/a"}
    assert await listing(blobs, "2028") == {}
    for info in everything.values():
        assert info.modified.utcoffset() == timedelta(0)
        assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=5)


@pytest.mark.parametrize("key", ESCAPING_KEYS + MALFORMED_KEYS)
async def test_keys_that_could_escape_or_alias_are_rejected(
    blobs: BlobStore, key: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="blob key"):
        await blobs.put(key, stream(b"pwned"))
    with pytest.raises(ValueError, match="blob key"):
        await blobs.download(key, tmp_path / "download")
    with pytest.raises(ValueError, match="blob key"):
        await blobs.delete(key)

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_new_blob_key_is_a_dated_uuid_that_passes_validation() -> None:
    now = datetime(2026, 11, 5, 23, 30, tzinfo=UTC)

    key = new_blob_key(now)

    assert re.fullmatch(r"2026/11/05/[0-9a-f]{32}", key)
    assert validate_blob_key(key) == key
    assert new_blob_key(now) != key
    plus_two = timezone(timedelta(hours=2))
    assert new_blob_key(datetime(2026, 11, 6, 1, 0, tzinfo=plus_two)).startswith("2026/11/05/")
    with pytest.raises(ValueError, match="aware"):
        new_blob_key(datetime(2026, 11, 5))  # naive on purpose


async def test_new_blob_keys_are_storable(blobs: BlobStore, tmp_path: Path) -> None:
    key = new_blob_key(datetime.now(UTC))
    await blobs.put(key, stream(b"doc"))
    assert await read(blobs, key, tmp_path) == b"doc"


# -- the local directory specifically ---------------------------------------------------


async def test_local_store_creates_its_root_on_first_use(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "not" / "yet")
    assert await listing(store) == {}

    await store.ping()
    assert (tmp_path / "not" / "yet").is_dir()
    await store.put(KEY, stream(b"x"))
    assert (tmp_path / "not" / "yet" / KEY).read_bytes() == b"x"


async def test_local_ping_names_an_unusable_directory(tmp_path: Path) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_bytes(b"")
    store = LocalBlobStore(occupied)

    with pytest.raises(StoreUnavailable, match=re.escape(str(occupied))):
        await store.ping()


async def test_local_list_ignores_files_it_did_not_write(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put(KEY, stream(b"x"))
    (tmp_path / "2026" / "stray~0123.tmp").write_bytes(b"half an upload")
    (tmp_path / "2026" / "with space").write_bytes(b"not ours")

    assert set(await listing(store)) == {KEY}
