"""`sheaf up` with the Azure Blob backend (Azurite): a 50 MB upload streams through.

The API must never hold the whole body: its peak RSS may grow by less than 64 MB while a
50 MB file goes to Blob Storage. A worker then downloads and processes it, and deleting
the document removes the blob.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from sheaf.adapters.blob_azure import AzureBlobStore
from tests.e2e.conftest import Proc, free_port, get_json, sheaf_env, start, wait_ready, wait_status

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def big_text(path: Path) -> Path:
    """50 MB of text: a few hundred words, then whitespace (cheap to extract and chunk)."""
    words = " ".join(f"turbine{i} blade{i % 7} inspection" for i in range(300))
    with path.open("wb") as out:
        out.write(words.encode())
        out.write(b" " * (50 * MB - len(words)))
    return path


async def blob_names(connection_string: str, container: str) -> list[str]:
    store = AzureBlobStore.from_connection_string(connection_string, container)
    try:
        return [info.key async for info in store.list()]
    finally:
        await store.close()


async def test_a_50mb_upload_streams_to_blob_storage_and_is_processed(
    azurite: object, tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    connection_string = azurite.connection_string  # type: ignore[attr-defined]
    container = f"e2e-{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = sheaf_env(
        SHEAF_BLOB_BACKEND="azure",
        SHEAF_AZURE_STORAGE_CONNECTION_STRING=connection_string,
        SHEAF_AZURE_STORAGE_CONTAINER=container,
        SHEAF_WORKERS="1",
    )
    up = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, up)
    before = rss_kib(up.popen.pid, "VmRSS")

    path = big_text(tmp_path / "turbines.txt")
    with path.open("rb") as handle:
        form = aiohttp.FormData()
        form.add_field("file", handle, filename="turbines.txt")
        async with http.post(f"{url}/v1/collections/wind/documents", data=form) as response:
            body = await response.json()
            assert response.status == 202, body
    growth_mb = (rss_kib(up.popen.pid, "VmHWM") - before) / 1024
    print(f"API peak RSS growth during a 50 MB upload: {growth_mb:.1f} MB")
    assert growth_mb < 64
    assert body["size_bytes"] == 50 * MB

    doc = await wait_status(http, url, body["id"], {"completed", "failed"}, timeout=120)
    assert doc["status"] == "completed", doc
    assert await blob_names(connection_string, container) != []
    hits = await get_json(http, f"{url}/v1/collections/wind/search?q=turbine7+blade0&k=1")
    assert hits["results"][0]["document_id"] == body["id"]

    async with http.delete(f"{url}/v1/documents/{body['id']}") as response:
        assert response.status == 202
    for _ in range(100):
        if not await blob_names(connection_string, container):
            break
        await asyncio.sleep(0.1)
    assert await blob_names(connection_string, container) == []
