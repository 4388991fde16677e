"""The embedding-cache lookup and the duplicate check seek an index that leads with their key.

Issue 19, point 3 (indexes of migration 0007). The statements are the stores' own, compiled
for each backend; the plan is read with EXPLAIN, never timed. PostgreSQL is asked for the
generic plan (the one a prepared statement keeps, every value a parameter) of tables no
one has analysed, before and after rows arrive: the plan must not depend on statistics
being fresh. SQL Server's forced seeks are checked on the SQL: test_mssql_plans.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from sheaf.adapters.sql import open_store, postgres
from sheaf.adapters.sql.migrate import upgrade
from sheaf.adapters.sql.store import cache_lookup, duplicate_check, hit_chunks, hit_owners
from sheaf.domain.chunking import content_hash
from sheaf.domain.models import Chunk, Completion, EmbeddedChunk

pytestmark = pytest.mark.integration

HASHES = [f"{n:064x}" for n in range(40)]
KEYS = {  # the lookup's key, and the indexes leading with it
    "cache lookup": ("content_sha256", {"ix_chunks_content"}),
    "duplicate check": (
        "collection=? AND sha256=?",
        {"ix_documents_collection_sha256", "uq_documents_collection_sha256_live"},
    ),
}


def statement(lookup: str, dialect: str) -> Any:
    if lookup == "duplicate check":
        return duplicate_check("docs", "ab" * 32)
    if dialect == "postgresql":
        return postgres.cache_lookup("docs", "model-a", HASHES)
    return cache_lookup("docs", "model-a", HASHES)


def compiled(query: Any, dialect: sa.Dialect) -> sa.engine.Compiled:
    return query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "plans.db"
    path.write_bytes(sqlite_template.read_bytes())
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize("lookup", sorted(KEYS))
def test_sqlite_seeks_an_index_leading_with_the_key(
    sqlite_db: sqlite3.Connection, lookup: str
) -> None:
    sql = compiled(statement(lookup, "sqlite"), sqlite.dialect(paramstyle="qmark"))
    values = [sql.params[name] for name in sql.positiontup or ()]
    (detail,) = [str(row[-1]) for row in sqlite_db.execute(f"EXPLAIN QUERY PLAN {sql}", values)]
    key, indexes = KEYS[lookup]
    assert any(
        detail.startswith(f"SEARCH {t} USING INDEX {i} ({key}")
        for t in ("chunks", "documents")
        for i in indexes
    ), detail


def test_sqlite_search_hits_are_fetched_by_primary_key(sqlite_db: sqlite3.Connection) -> None:
    """A ranking's chunks and their documents, each looked up by key: the cost of turning
    50 ranked ids into hits does not grow with the collection."""
    details = []
    for query in (hit_chunks(list(range(1, 51))), hit_owners([f"doc-{n}" for n in range(9)])):
        sql = compiled(query, sqlite.dialect(paramstyle="qmark"))
        values = [sql.params[name] for name in sql.positiontup or ()]
        details += [str(row[-1]) for row in sqlite_db.execute(f"EXPLAIN QUERY PLAN {sql}", values)]
    assert details[0].startswith("SEARCH chunks USING INTEGER PRIMARY KEY (rowid=?)"), details
    assert details[1].startswith(
        "SEARCH documents USING INDEX sqlite_autoindex_documents_1 (id=?)"
    ), details
    assert len(details) == 2, details


def generic_plan(dsn: str, query: Any) -> list[dict[str, Any]]:
    """The plan nodes of `query` as a prepared statement's generic plan."""
    sql = compiled(query, postgresql.dialect(paramstyle="format"))
    values = [sql.params[name] for name in sql.positiontup or ()]
    types = ", ".join("varchar[]" if isinstance(v, list) else "varchar" for v in values)
    numbered = str(sql)
    for number in range(1, len(values) + 1):
        numbered = numbered.replace("%s", f"${number}", 1)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE lookup ({types}) AS {numbered}")
            args = ", ".join(["%s"] * len(values))
            cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE lookup ({args})", values)
            (plan,) = cur.fetchone()
    finally:
        conn.close()
    return list(walk(plan[0]["Plan"]))


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def fill(dsn: str) -> None:
    """10,000 chunks of one collection and model and 2,000 documents, never analysed."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO documents (id, collection, filename, content_type, size_bytes, sha256,"
            " blob_key, status, max_attempts, created_at, updated_at)"
            " SELECT md5(g::text), 'docs', 'f', 'text/plain', 1, md5(g::text) || md5(g::text),"
            " 'k' || g, 'completed', 3, now(), now() FROM generate_series(1, 2000) AS g"
        )
        cur.execute(
            "INSERT INTO chunks (document_id, collection, lease_token, ordinal, page_start,"
            " page_end, text, model, dimensions, embedding, content_sha256)"
            " SELECT md5((g % 2000 + 1)::text), 'docs', 't', g, 1, 1, 'x', 'model-a', 1,"
            " '\\x00', md5(g::text) || md5(g::text) FROM generate_series(1, 10000) AS g"
        )
    conn.close()


@pytest.mark.parametrize("lookup", sorted(KEYS))
def test_postgres_generic_plan_seeks_an_index_leading_with_the_key(
    fresh_postgres_url: str, lookup: str
) -> None:
    upgrade(fresh_postgres_url)
    dsn = fresh_postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    key, indexes = KEYS[lookup]
    for filled in (False, True):
        if filled:
            fill(dsn)
        nodes = generic_plan(dsn, statement(lookup, "postgresql"))
        used = {node.get("Index Name") for node in nodes} - {None}
        assert used, json.dumps(nodes, indent=1)
        assert used <= indexes, json.dumps(nodes, indent=1)
        assert not any(node["Node Type"] == "Seq Scan" for node in nodes)
        conditions = " ".join(str(node.get("Index Cond", "")) for node in nodes)
        assert f"({key.split('=')[0]})" in conditions, conditions


# -- every per-document statement (issue 19, point 3) ------------------------------------------


async def test_sqlite_every_per_document_statement_searches_an_index(
    sqlite_template: Path, tmp_path: Path, new_document: Any
) -> None:
    """A document's whole life through the store, each statement it sent explained.

    Every SELECT, UPDATE and DELETE that names one document, lease or content is a SEARCH
    through an index or the primary key; none SCANs a table (the collection-wide reads,
    stats, listing and search, are not part of a document's life and are not run here).
    """
    path = tmp_path / "life.db"
    path.write_bytes(sqlite_template.read_bytes())
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            sent.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        doc, _ = await store.create_document(new_document())
        acquired = await store.acquire_document_lease(doc.id, "w", 30.0)
        lease = acquired.lease
        assert lease is not None
        await store.renew_document_lease(doc.id, lease.token, 30.0, "embed")
        chunk = EmbeddedChunk(Chunk(0, "text", 1, 1), (1.0, 0.0), "model-a")
        await store.cached_embeddings(doc.collection, "model-a", [content_hash("text")])
        await store.write_chunks(lease, [chunk])
        await store.complete(lease, Completion(1, 1, {"embed": 0.1}, "model-a", 2))
        await store.get_document(doc.id)
        await store.document_chunks(doc.id)
        await store.delete_document(doc.id)
        await store.purge_document(doc.id)
    finally:
        await store.close()
    assert len(sent) > 15
    scans = []
    with sqlite3.connect(path) as conn:
        for statement, parameters in sent:
            for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters):
                detail = str(row[-1])
                if detail.startswith("SCAN ") and "CONSTANT ROW" not in detail:
                    scans.append(f"{detail}: {' '.join(statement.split())[:90]}")
    conn.close()
    assert scans == []


async def test_postgres_every_per_document_statement_uses_an_index(
    fresh_postgres_url: str, new_document: Any
) -> None:
    """The same on PostgreSQL, for the statements SQLAlchemy sends (the lease functions run
    inside PL/pgSQL), each planned as a prepared statement's generic plan, before ANALYZE."""
    await asyncio.to_thread(upgrade, fresh_postgres_url)
    dsn = fresh_postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    fill(dsn)
    store = await open_store(fresh_postgres_url)
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            sent.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        doc, _ = await store.create_document(new_document())
        acquired = await store.acquire_document_lease(doc.id, "w", 30.0)
        lease = acquired.lease
        assert lease is not None
        chunk = EmbeddedChunk(Chunk(0, "text", 1, 1), (1.0, 0.0), "model-a")
        await store.cached_embeddings(doc.collection, "model-a", [content_hash("text")])
        await store.write_chunks(lease, [chunk])
        await store.complete(lease, Completion(1, 1, {"embed": 0.1}, "model-a", 2))
        await store.get_document(doc.id)
        await store.document_chunks(doc.id)
        await store.delete_document(doc.id)
        await store.purge_document(doc.id)
    finally:
        await store.close()
    per_document = [(s, p) for s, p in sent if "$1" in s]  # the clock read binds nothing
    assert len(per_document) > 8
    scans = []
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_generic_plan")
            for number, (statement, parameters) in enumerate(per_document):
                cur.execute(f"PREPARE s{number} AS {statement}")
                args = ", ".join(["%s"] * len(parameters))
                cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE s{number} ({args})", list(parameters))
                (plan,) = cur.fetchone()
                scans += [
                    f"{node['Relation Name']}: {' '.join(statement.split())[:90]}"
                    for node in walk(plan[0]["Plan"])
                    if node["Node Type"] == "Seq Scan"
                ]
    finally:
        conn.close()
    assert scans == []
