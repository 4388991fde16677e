"""Fixtures of the store contract: one empty `store` per backend, and document factories.

`memory` is the in-package fake, `sqlite` a copy of a file migrated once per session,
`postgres` the session's database (migrated once, its tables emptied before every test),
`mssql` the database named by SHEAF_TEST_MSSQL_URL (created when missing, migrated once,
emptied before every test). SQL Server is optional: without the variable its tests are
skipped with the reason shown, also under CI=true, because this project's CI has none.
The URL fixtures are synchronous on purpose: migrations run outside any event loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.migrate import upgrade
from sheaf.adapters.sql.mssql import set_session_options
from sheaf.domain.models import Document, NewDocument
from sheaf.ports import DocumentStore

MakeDocument = Callable[..., Awaitable[Document]]
NewDocumentFactory = Callable[..., NewDocument]


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "sheaf.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def truncate_postgres(dsn: str) -> None:
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE chunks, attempts, documents RESTART IDENTITY")
    conn.close()


MSSQL_URL = os.environ.get("SHEAF_TEST_MSSQL_URL", "")
NO_MSSQL = (
    "SQL Server not configured: set SHEAF_TEST_MSSQL_URL (README) to run the contract suite "
    "against it. It is optional, for maintainers: skipped even when CI=true, since this "
    "project's CI runs no SQL Server (.github/workflows/mssql.yml does, on a hosted CI)"
)


@pytest.fixture(scope="session")
def mssql_admin() -> Iterator[sa.Engine]:
    """A synchronous pyodbc engine on the test database, for creating and emptying it."""
    if not MSSQL_URL:
        pytest.skip(NO_MSSQL)
    url = sa.make_url(MSSQL_URL).set(drivername="mssql+pyodbc")
    _create_mssql_database(url)
    engine = sa.create_engine(url)
    # The session options writes to indexed computed columns need (FreeTDS may not set them).
    sa.event.listen(engine, "connect", set_session_options)
    try:
        yield engine
    finally:
        engine.dispose()


def _create_mssql_database(url: sa.URL) -> None:
    """A fresh SQL Server container has system databases only: create the URL's one."""
    name = url.database or ""
    if not re.fullmatch(r"\w+", name):
        pytest.fail(f"SHEAF_TEST_MSSQL_URL must name a database (letters, digits, _): {name!r}")
    master = sa.create_engine(url.set(database="master"), isolation_level="AUTOCOMMIT")
    try:
        with master.connect() as conn:
            conn.exec_driver_sql(f"IF DB_ID(N'{name}') IS NULL CREATE DATABASE [{name}]")
    finally:
        master.dispose()


@pytest.fixture(scope="session")
def migrated_mssql_url(mssql_admin: sa.Engine) -> str:
    upgrade(MSSQL_URL)
    return MSSQL_URL


@pytest.fixture
def empty_mssql_url(migrated_mssql_url: str, mssql_admin: sa.Engine) -> str:
    """The SQL Server test database, migrated, every table emptied."""
    with mssql_admin.begin() as conn:  # children first: documents is referenced
        # DELETE, not TRUNCATE: chunks may carry a full-text index (revision 0008).
        conn.exec_driver_sql("DELETE FROM chunks; TRUNCATE TABLE attempts")
        conn.exec_driver_sql("DELETE FROM documents")
    return migrated_mssql_url


@pytest.fixture(params=["memory", "sqlite", "postgres", "mssql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """The backend's URL (`memory` for the fake), its database empty and migrated."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        path = tmp_path / "sheaf.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue(f"empty_{request.param}_url")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty migrated SQLite or PostgreSQL database, for what only those two do."""
    if request.param == "sqlite":
        path = tmp_path / "sheaf.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("empty_postgres_url")
    return url


@pytest.fixture
def pg_admin(postgres_dsn: str) -> Iterator[Any]:
    """An autocommit psycopg2 session on the test database, to watch and terminate others."""
    import psycopg2

    conn = psycopg2.connect(postgres_dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def empty_postgres_url(migrated_postgres_url: str, postgres_dsn: str) -> str:
    """The session's PostgreSQL database, migrated, every table emptied."""
    truncate_postgres(postgres_dsn)
    return migrated_postgres_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[DocumentStore]:
    if store_url == "memory":
        from sheaf.testing import InMemoryDocumentStore

        backend: DocumentStore = InMemoryDocumentStore()
    else:
        backend = await open_store(store_url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def new_document() -> NewDocumentFactory:
    """`new_document(collection=, content=, max_attempts=, filename=)`: a document to upload."""
    return _new_document


@pytest.fixture
def make_document(store: DocumentStore) -> MakeDocument:
    """Insert a queued document through `create_document` and return it."""

    async def make(**options: Any) -> Document:
        document, created = await store.create_document(_new_document(**options))
        assert created
        return document

    return make


def _new_document(
    *,
    collection: str = "docs",
    content: str | None = None,
    max_attempts: int = 3,
    filename: str | None = None,
) -> NewDocument:
    """A document to upload; distinct content unless `content` is given."""
    document_id = str(uuid.uuid4())
    body = content if content is not None else document_id
    return NewDocument(
        id=document_id,
        collection=collection,
        filename=filename or f"{document_id[:8]}.txt",
        content_type="text/plain",
        size_bytes=len(body),
        sha256=hashlib.sha256(body.encode()).hexdigest(),
        blob_key=f"{collection}/{document_id}",
        max_attempts=max_attempts,
    )
