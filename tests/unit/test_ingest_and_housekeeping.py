"""Accepting uploads and the background recovery jobs, on the in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from sheaf.domain.models import Status
from sheaf.errors import ClientError, UnsupportedType, UploadTooLarge
from sheaf.services import housekeeping
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload, display_filename
from sheaf.testing import RecordingMessageBus
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit


async def stream(*blocks: bytes) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


async def blob_keys(deps: Deps) -> list[str]:
    return [info.key async for info in deps.blobs.list()]


async def test_upload_creates_a_queued_document_and_sends_a_wake_up(deps: Deps) -> None:
    result = await accept_upload(deps, "c", "a.txt", stream(b"hello ", b"world"))
    assert result.created
    doc = result.document
    assert (doc.status, doc.size_bytes, doc.content_type) == (Status.QUEUED, 11, "text/plain")
    assert doc.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert await blob_keys(deps) == [doc.blob_key]
    bus = deps.bus
    assert isinstance(bus, RecordingMessageBus)
    assert [(d.document_id, d.dispatch_seq) for d in bus.sent] == [(doc.id, 1)]


async def test_same_bytes_same_collection_is_the_same_document(deps: Deps) -> None:
    first = await accept_upload(deps, "c", "a.txt", stream(b"same bytes"))
    again = await accept_upload(deps, "c", "b.txt", stream(b"same ", b"bytes"))
    other = await accept_upload(deps, "d", "a.txt", stream(b"same bytes"))
    assert not again.created
    assert again.document.id == first.document.id
    assert other.created
    assert len(await blob_keys(deps)) == 2  # the duplicate's blob was not kept


async def test_too_large_is_refused_while_streaming_and_leaves_nothing() -> None:
    deps = make_deps(max_upload_bytes=10)
    with pytest.raises(UploadTooLarge, match="SHEAF_MAX_UPLOAD_BYTES"):
        await accept_upload(deps, "c", "a.txt", stream(b"12345678", b"12345678", b"more"))
    assert await blob_keys(deps) == []
    assert (await deps.store.stats()).counts["queued"] == 0


async def test_unsupported_type_leaves_nothing(deps: Deps) -> None:
    with pytest.raises(UnsupportedType):
        await accept_upload(deps, "c", "x.pdf", stream(b"GIF89a" + bytes(100)))
    assert await blob_keys(deps) == []


async def test_bad_collection_names_are_refused(deps: Deps) -> None:
    for name in ["", "../etc", "a b", "x" * 129, "-lead"]:
        with pytest.raises(ClientError, match="invalid collection"):
            await accept_upload(deps, name, "a.txt", stream(b"text"))


async def test_a_failed_send_does_not_fail_the_upload() -> None:
    deps = make_deps()
    bus = deps.bus
    assert isinstance(bus, RecordingMessageBus)
    bus.fail_next(1)
    result = await accept_upload(deps, "c", "a.txt", stream(b"text body"))
    assert result.created
    assert result.document.status is Status.QUEUED


def test_filenames_are_display_metadata_only() -> None:
    assert display_filename("../../etc/passwd") == "passwd"
    assert display_filename("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert display_filename("a\x00b\nc.pdf") == "abc.pdf"
    assert display_filename("") == "upload"
    assert display_filename(None) == "upload"
    assert len(display_filename("x" * 1000)) == 255


async def test_sweep_recovers_expired_leases_and_re_sends(deps: Deps) -> None:
    doc = (await accept_upload(deps, "c", "a.txt", stream(b"text body"))).document
    await deps.store.claim_queued_documents("gone", 0.05, 1)
    await asyncio.sleep(0.1)
    assert await housekeeping.sweep(deps) == 1
    recovered = await deps.store.get_document(doc.id)
    assert recovered is not None
    assert (recovered.status, recovered.error_code) == (Status.QUEUED, "lease_expired")
    bus = deps.bus
    assert isinstance(bus, RecordingMessageBus)
    assert [d.dispatch_seq for d in bus.sent] == [1, 2]


async def test_reconcile_re_sends_stale_queued_rows_once() -> None:
    deps = make_deps(reconcile_after_seconds=0.05)
    await accept_upload(deps, "c", "a.txt", stream(b"text body"))
    await asyncio.sleep(0.1)
    counts = await asyncio.gather(*(housekeeping.reconcile(deps) for _ in range(5)))
    assert sorted(counts) == [0, 0, 0, 0, 1]


async def test_clean_removes_a_tombstones_blob_and_keeps_the_row(deps: Deps) -> None:
    doc = (await accept_upload(deps, "c", "a.txt", stream(b"text body"))).document
    await deps.store.delete_document(doc.id)
    assert await housekeeping.clean(deps) == 1
    assert await blob_keys(deps) == []
    kept = await deps.store.get_document(doc.id)
    assert kept is not None
    assert kept.status is Status.DELETED
    assert await housekeeping.clean(deps) == 0


async def test_orphan_blobs_are_collected_after_the_grace_period() -> None:
    deps = make_deps(orphan_blob_grace_seconds=0)
    doc = (await accept_upload(deps, "c", "a.txt", stream(b"text body"))).document
    await deps.blobs.put("2026/01/01/orphan", stream(b"crashed before its row committed"))
    await asyncio.sleep(0.01)
    assert await housekeeping.collect_orphan_blobs(deps) == 1
    assert await blob_keys(deps) == [doc.blob_key]
    patient = dataclasses.replace(
        deps, settings=deps.settings.model_copy(update={"orphan_blob_grace_seconds": 3600})
    )
    await deps.blobs.put("2026/01/01/young", stream(b"upload in progress"))
    assert await housekeeping.collect_orphan_blobs(patient) == 0
