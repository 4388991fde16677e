"""The composition root picks the adapters the settings name, and closes what it opened."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sheaf.adapters.blob_azure import AzureBlobStore
from sheaf.adapters.blob_local import LocalBlobStore
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.adapters.embed_local import LocalEmbedder
from sheaf.adapters.embed_openai import OpenAIEmbedder
from sheaf.adapters.sql.migrate import sql_dir
from sheaf.bootstrap import local_embedding_threads, migrate, open_deps
from sheaf.config import Settings
from sheaf.errors import ConfigError
from sheaf.extract.isolated import IsolatedExtractor

pytestmark = pytest.mark.integration


def settings(tmp_path: Path, **values: str) -> Settings:
    db = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    return Settings.from_env({"SHEAF_DATABASE_URL": db, **values})


async def test_the_embedded_default(tmp_path: Path) -> None:
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        assert isinstance(deps.blobs, LocalBlobStore)
        assert isinstance(deps.embedder, LocalEmbedder)
        assert deps.embedder.dimensions == chosen.embedding_dimensions == 384
        assert deps.embedder.threads == max(1, (os.cpu_count() or 1) // chosen.workers)
        assert not deps.bus.enabled
        await deps.store.ping()


def test_local_model_threads_default_to_the_cores_each_worker_gets() -> None:
    cores = os.cpu_count() or 1
    assert local_embedding_threads(Settings.from_env({"SHEAF_WORKERS": "1"})) == cores
    many = Settings.from_env({"SHEAF_WORKERS": str(cores * 2)})
    assert local_embedding_threads(many) == 1  # never zero
    chosen = Settings.from_env({"SHEAF_LOCAL_EMBEDDING_THREADS": "3"})
    assert local_embedding_threads(chosen) == 3


async def test_the_lexical_fake_stays_selectable(tmp_path: Path) -> None:
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"), SHEAF_EMBEDDER="lexical")
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        assert isinstance(deps.embedder, LexicalEmbedder)
        assert deps.embedder.dimensions == 1024


async def test_a_worker_starts_its_extraction_processes_at_once(tmp_path: Path) -> None:
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))
    await asyncio.to_thread(migrate, chosen)
    async with open_deps(chosen) as deps:
        await asyncio.sleep(0.5)
        assert isinstance(deps.extractor, IsolatedExtractor)
        assert deps.extractor.pids() == []  # the API's: children start on first use
    async with open_deps(chosen, warm_extractor=True) as deps:
        assert isinstance(deps.extractor, IsolatedExtractor)
        for _ in range(200):
            if len(deps.extractor.pids()) == chosen.extract_processes:
                break
            await asyncio.sleep(0.05)
        assert len(deps.extractor.pids()) == chosen.extract_processes


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


async def test_a_database_behind_the_code_is_refused_with_the_fix(tmp_path: Path) -> None:
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))
    with pytest.raises(ConfigError, match=r"no Sheaf schema yet: run `sheaf db upgrade`"):
        async with open_deps(chosen):
            pass
    url = chosen.database_url.get_secret_value()
    await asyncio.to_thread(_upgrade_to, url, "0001")
    with pytest.raises(ConfigError, match=r"at revision 0001 but this Sheaf needs \w+: run"):
        async with open_deps(chosen):
            pass


async def test_a_database_ahead_of_the_code_is_accepted(tmp_path: Path) -> None:
    """A rolling upgrade migrates first; the previous release keeps running meanwhile."""
    chosen = settings(tmp_path, SHEAF_BLOB_DIR=str(tmp_path / "blobs"))
    await asyncio.to_thread(migrate, chosen)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sheaf.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    async with open_deps(chosen) as deps:
        await deps.store.ping()


def _upgrade_to(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(sql_dir() / "migrations"))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)
