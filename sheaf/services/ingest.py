"""Accepting an upload: stream to the blob store, record the row, send the wake-up.

Order matters for "never lose a document": the blob is written before the row commits, so
a committed row always has its bytes. A crash between the two leaves only an orphan blob,
which the collector in `sheaf.services.housekeeping` removes. The wake-up message is sent
after the commit and may fail without failing the upload: the reconciler (or polling)
picks the row up anyway.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sheaf.domain.blobkeys import new_blob_key
from sheaf.domain.collections import COLLECTION_RE
from sheaf.domain.models import ContentType, Dispatch, Document, NewDocument
from sheaf.errors import ClientError, SheafError, UploadTooLarge
from sheaf.extract.detect import HEAD_BYTES, detect_content_type
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class UploadResult:
    document: Document
    created: bool


def check_collection(name: str) -> str:
    if not COLLECTION_RE.fullmatch(name):
        raise ClientError(
            f"invalid collection name {name[:140]!r}: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            code="invalid_collection",
        )
    return name


def display_filename(raw: str | None) -> str:
    """The user's filename as display metadata only: no path, no control characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:MAX_FILENAME_CHARS] or "upload"


class _Inspector:
    """Passes the body through while hashing, counting, limiting and sniffing its head."""

    def __init__(self, body: AsyncIterator[bytes], limit: int, filename: str) -> None:
        self._body = body
        self._limit = limit
        self._filename = filename
        self._head = bytearray()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.content_type: ContentType | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        async for block in self._body:
            self.size += len(block)
            if self.size > self._limit:
                raise UploadTooLarge(
                    f"the upload is larger than the limit of {self._limit} bytes "
                    "(SHEAF_MAX_UPLOAD_BYTES)"
                )
            self.sha256.update(block)
            if self.content_type is None:
                self._head += block[: HEAD_BYTES - len(self._head)]
                if len(self._head) >= HEAD_BYTES:
                    self._detect()
            yield block
        if self.content_type is None:
            self._detect()

    def _detect(self) -> None:
        self.content_type = detect_content_type(bytes(self._head), filename=self._filename)


async def accept_upload(
    deps: Deps, collection: str, filename: str | None, body: AsyncIterator[bytes]
) -> UploadResult:
    """Store the body and queue it; the same bytes in the same collection are one document.

    Raises `ClientError` subclasses (413 too large, 415 unsupported type, 400 bad collection)
    before any row exists; the partial blob is never kept.
    """
    check_collection(collection)
    name = display_filename(filename)
    key = new_blob_key(datetime.now(UTC))
    inspector = _Inspector(body, deps.settings.max_upload_bytes, name)
    await deps.blobs.put(key, inspector.stream())
    assert inspector.content_type is not None  # set by the end of the stream
    new = NewDocument(
        id=str(uuid.uuid4()),
        collection=collection,
        filename=name,
        content_type=inspector.content_type.value,
        size_bytes=inspector.size,
        sha256=inspector.sha256.hexdigest(),
        blob_key=key,
        max_attempts=deps.settings.max_attempts,
    )
    try:
        document, created = await deps.store.create_document(new)
    except BaseException:
        await _forget_blob(deps, key)
        raise
    if not created:
        await _forget_blob(deps, key)
        return UploadResult(document, created=False)
    await _wake(deps, document)
    return UploadResult(document, created=True)


async def _forget_blob(deps: Deps, key: str) -> None:
    try:
        await deps.blobs.delete(key)
    except SheafError:
        log.warning("could not delete blob %s; the orphan collector will", key)


async def _wake(deps: Deps, document: Document) -> None:
    dispatch = Dispatch(document.id, document.collection, document.dispatch_seq)
    try:
        await deps.bus.send([dispatch])
    except SheafError as exc:
        log.warning(
            "wake-up message not sent; the reconciler will re-send it",
            extra={"document_id": document.id, "error": exc.message},
        )
