"""Service tests run on the in-memory fakes that ship in `sheaf.testing`."""

from __future__ import annotations

from typing import Any

import pytest

from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.config import Settings
from sheaf.extract import LocalExtractor
from sheaf.services.deps import Deps
from sheaf.testing import (
    InMemoryBlobStore,
    InMemoryDocumentStore,
    InMemoryKeyStore,
    RecordingMessageBus,
)

FAST: dict[str, Any] = {
    "lease_seconds": 0.6,
    "heartbeat_seconds": 0.1,
    "poll_interval_seconds": 0.02,
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.1,
    "shutdown_grace_seconds": 0.2,
    "chunk_size": 200,
    "chunk_overlap": 20,
    "embed_batch_size": 2,
    "embedder": "lexical",  # deterministic and instant; the real model has its own tests
    "embedding_dimensions": 256,
}


def make_deps(**overrides: Any) -> Deps:
    settings = Settings.from_env({}, **{**FAST, **overrides})
    return Deps(
        settings=settings,
        store=InMemoryDocumentStore(),
        blobs=InMemoryBlobStore(),
        bus=RecordingMessageBus(),
        extractor=LocalExtractor(),
        embedder=LexicalEmbedder(settings.embedding_dimensions),
        keys=InMemoryKeyStore(),
    )


@pytest.fixture
def deps() -> Deps:
    return make_deps()
