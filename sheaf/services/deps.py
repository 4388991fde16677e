"""The ports a service needs, bundled once by the composition root (`sheaf.bootstrap`)."""

from __future__ import annotations

from dataclasses import dataclass

from sheaf.config import Settings
from sheaf.ports import BlobStore, DocumentStore, Embedder, Extractor, MessageBus


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    store: DocumentStore
    blobs: BlobStore
    bus: MessageBus
    extractor: Extractor
    embedder: Embedder
