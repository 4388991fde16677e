"""The ports a service needs, bundled once by the composition root (`sheaf.bootstrap`)."""

from __future__ import annotations

from dataclasses import dataclass

from sheaf.config import Settings
from sheaf.ports import (
    BlobStore,
    DocumentStore,
    Embedder,
    Extractor,
    KeyStore,
    MessageBus,
    WorkQueue,
)


@dataclass(frozen=True, slots=True)
class Deps:
    """`queue` is the same object as `bus` when a queue workers receive from is configured
    (Service Bus); None means polling, and no dead-letter queue. `keys` is the API key
    store (the same database as `store`); None where no process needs one."""

    settings: Settings
    store: DocumentStore
    blobs: BlobStore
    bus: MessageBus
    extractor: Extractor
    embedder: Embedder
    queue: WorkQueue | None = None
    keys: KeyStore | None = None
