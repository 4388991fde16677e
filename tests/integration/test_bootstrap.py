"""The composition root picks the adapters the settings name, and closes what it opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sheaf.adapters.blob_azure import AzureBlobStore
from sheaf.adapters.blob_local import LocalBlobStore
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.adapters.embed_openai import OpenAIEmbedder
from sheaf.bootstrap import migrate, open_deps
from sheaf.config import Settings

pytestmark = pytest.mark.integration


def settings(tmp_path: Path, **values: str) -> Settings:
    db = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    return Settings.from_env({"SHEAF_DATABASE_URL": db, **values})


async def test_the_embedded_default(tmp_path: Path) -> None:
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        assert isinstance(deps.blobs, LocalBlobStore)
        assert isinstance(deps.embedder, LexicalEmbedder)
        assert not deps.bus.enabled
        await deps.store.ping()


async def test_azure_blob_and_an_openai_compatible_embedder(tmp_path: Path) -> None:
    chosen = settings(
        tmp_path,
        SHEAF_BLOB_BACKEND="azure",
        SHEAF_AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true",
        SHEAF_EMBEDDER="openai",
        SHEAF_OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        SHEAF_OPENAI_MODEL="bge-small",
        SHEAF_EMBEDDING_DIMENSIONS="384",
    )
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        assert isinstance(deps.blobs, AzureBlobStore)
        assert isinstance(deps.embedder, OpenAIEmbedder)
        assert deps.embedder.model == "openai:bge-small:384"
