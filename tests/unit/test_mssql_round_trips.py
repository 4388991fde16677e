"""What the SQL Server store sends per lease operation: one EXEC, nothing else (point 5).

The real `mssql+aioodbc` engines of `open_store` run over a stand-in for the driver's
connection (`aioodbc.connect` replaced): it records every statement, every switch of
autocommit, every rollback and commit, and every parameter it would have to ask the
server to describe (a bind sent without a type). After the first connection is set up,
each lease call must be exactly one EXEC with typed binds: no autocommit switched on
and back, no pre-ping. (SQLAlchemy still calls rollback() when a connection is closed; in
autocommit mode no transaction is open and the driver answers it without the server.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.mssql import MssqlDocumentStore
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.domain.models import Completion, ErrorInfo, Lease, ReleaseOutcome
from tests.conftest import odbc_module

aioodbc = odbc_module("aioodbc")
pyodbc = odbc_module("pyodbc")

pytestmark = pytest.mark.unit

URL = "mssql+aioodbc://sheaf:pw@db:1433/sheaf?driver=ODBC+Driver+18+for+SQL+Server"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
# Result rows by procedure: (column names, one row).
ANSWERS: dict[str, tuple[list[str], tuple[Any, ...]]] = {
    "acquire_document_lease": (
        [
            "outcome",
            "status",
            "dispatch_seq",
            "collection",
            "blob_key",
            "content_type",
            "not_before",
            "lease_token",
            "lease_expires_at",
            "attempt",
        ],
        ("acquired", "processing", 1, "c", "c/d", "text/plain", None, "t", NOW, 1),
    ),
    "renew_document_lease": (["renewed"], (True,)),
    "release_document_lease": (
        ["applied", "status", "not_before", "dispatch_seq"],
        (True, "queued", NOW, 2),
    ),
    "complete_document_lease": (["completed"], (True,)),
    "find_expired_leases": (
        ["document_id", "collection", "dispatch_seq", "status", "not_before"],
        ("d", "c", 2, "queued", None),
    ),
    "claim_queued_documents_v2": (
        [
            "document_id",
            "collection",
            "lease_token",
            "lease_expires_at",
            "attempt",
            "dispatch_seq",
            "blob_key",
            "content_type",
        ],
        ("d", "c", "t", NOW, 1, 1, "c/d", "text/plain"),
    ),
    "claim_stale_dispatches": (
        ["document_id", "collection", "dispatch_seq", "status", "not_before"],
        ("d", "c", 2, "queued", None),
    ),
}
# What SQLAlchemy asks a new connection once (server version, schema, isolation level).
SETUP_ANSWERS = {
    "serverproperty": (["v"], ("16.0.4135.4",)),
    "schema_name": (["s"], ("dbo",)),
    "transaction_isolation_level": (["l"], ("READ COMMITTED",)),
}


class Wire:
    """Everything the stand-in connections were asked to do, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.deleted: list[int] = []  # rows each chunk DELETE reports, in turn

    def mark(self) -> int:
        return len(self.log)


class FakeCursor:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._impl = self  # SQLAlchemy's aioodbc adapter calls setinputsizes on it
        self.fast_executemany = False
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.arraysize = 1
        self._rows: list[tuple[Any, ...]] = []
        self._sizes: list[Any] = []

    async def __aenter__(self) -> FakeCursor:
        return self

    def setinputsizes(self, sizes: list[Any]) -> None:
        self._sizes = list(sizes)

    async def execute(self, sql: str, *parameters: Any) -> FakeCursor:
        values = (
            list(parameters[0])
            if parameters and isinstance(parameters[0], (list, tuple))
            else list(parameters)
        )
        untyped = [  # no ODBC type code: the driver would ask the server to describe it
            i
            for i in range(len(values))
            if i >= len(self._sizes) or not isinstance(self._sizes[i][0], int)
        ]
        line = " ".join(sql.split())
        self._wire.log.append(f"execute {line}" + (f" [untyped {untyped}]" if untyped else ""))
        self._sizes = []
        answer = self._answer(line)
        if "DELETE" in line and "chunks" in line:
            self.rowcount = self._wire.deleted.pop(0) if self._wire.deleted else 0
        if answer is None:
            self.description, self._rows = None, []
        else:
            names, row = answer
            self.description = [(name, str, None, None, None, None, True) for name in names]
            self._rows = [row]
        return self

    @staticmethod
    def _answer(line: str) -> tuple[list[str], tuple[Any, ...]] | None:
        if called := re.match(r"EXEC dbo\.(\w+)", line):
            return ANSWERS[called.group(1)]
        if "FROM documents WITH (UPDLOCK, ROWLOCK)" in line:  # a tombstone, locked
            return ["id", "status"], ("d", "deleted")
        if "SYSUTCDATETIME()" in line:
            return ["now"], (NOW,)
        lowered = line.lower()
        for key, answer in SETUP_ANSWERS.items():
            if key in lowered:
                return answer
        if lowered.startswith("select"):
            return (["x"], (1,))
        return None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    async def close(self) -> None:
        pass


class RawConnection:
    """pyodbc's connection under aioodbc's: autocommit is set here."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._autocommit = False

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._wire.log.append(f"autocommit = {value}")
        self._autocommit = value


class FakeConnection:
    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._conn = RawConnection(wire)
        self.closed = False

    @property
    def autocommit(self) -> bool:
        return self._conn.autocommit

    def cursor(self) -> FakeCursor:
        return FakeCursor(self._wire)

    def add_output_converter(self, *_args: Any) -> None:
        pass

    async def rollback(self) -> None:
        # ODBC drivers answer a rollback in autocommit mode locally: no transaction is open.
        self._wire.log.append("rollback" + (" (autocommit: no-op)" if self.autocommit else ""))

    async def commit(self) -> None:
        self._wire.log.append("commit")

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorded = Wire()

    async def connect(**_kwargs: Any) -> FakeConnection:
        recorded.log.append("connect")
        return FakeConnection(recorded)

    monkeypatch.setattr(aioodbc, "connect", connect)
    return recorded


LEASE = Lease("d", "c", "t", "w", NOW, 1, 1, "c/d", "text/plain")
CALLS = {
    "acquire_document_lease": lambda s: s.acquire_document_lease("d", "w", 30.0),
    "renew_document_lease": lambda s: s.renew_document_lease("d", "t", 30.0, "embed"),
    "release_document_lease": lambda s: s.release_document_lease(
        "d", "t", ReleaseOutcome.TRANSIENT, ErrorInfo("timeout", "slow"), 2.0
    ),
    "release_document_lease (no error)": lambda s: s.release_document_lease(
        "d", "t", ReleaseOutcome.INTERRUPTED
    ),
    "complete_document_lease": lambda s: s.complete(
        LEASE,
        Completion(None, 2, {"embed": 0.1}, "m", 3),  # type: ignore[arg-type]
    ),
    "find_expired_leases": lambda s: s.find_expired_leases(10),
    "claim_queued_documents_v2": lambda s: s.claim_queued_documents("w", 30.0, 4),
    "claim_stale_dispatches": lambda s: s.claim_stale_dispatches(60.0, 10),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
async def test_each_lease_call_is_one_exec_with_typed_binds(wire: Wire, operation: str) -> None:
    store = await open_store(URL)
    assert isinstance(store, MssqlDocumentStore)
    try:
        await CALLS[operation](store)  # the first call opens and sets up the connection
        start = wire.mark()
        await CALLS[operation](store)
        sent = wire.log[start:]
    finally:
        await store.close()
    procedure = operation.split()[0]
    statements = [line for line in sent if line.startswith("execute")]
    assert len(statements) == 1, sent
    assert statements[0].startswith(f"execute EXEC dbo.{procedure} @"), sent
    assert "untyped" not in statements[0]
    assert set(sent) - set(statements) <= {"rollback (autocommit: no-op)"}, sent


async def test_connections_are_put_in_autocommit_once_and_never_pinged(wire: Wire) -> None:
    store = await open_store(URL)
    try:
        await store.renew_document_lease("d", "t", 30.0, "embed")
        start = wire.mark()  # the connection is open and set up
        for _ in range(3):
            await store.renew_document_lease("d", "t", 30.0, "embed")
    finally:
        await store.close()
    assert wire.log.count("connect") == 1
    assert wire.log.count("autocommit = True") == 1
    assert "autocommit = False" not in wire.log
    statements = [line for line in wire.log[start:] if line.startswith("execute")]
    assert len(statements) == 3
    assert all("EXEC dbo.renew_document_lease" in line for line in statements)


async def test_switching_autocommit_per_call_is_what_the_own_pool_avoids(wire: Wire) -> None:
    """The former way, for comparison: the shared engine, switched for each call."""
    store = await open_store(URL)
    assert isinstance(store, MssqlDocumentStore)
    switching = MssqlDocumentStore(store.engine)
    try:
        await switching.renew_document_lease("d", "t", 30.0, "embed")
        start = wire.mark()
        await switching.renew_document_lease("d", "t", 30.0, "embed")
        sent = wire.log[start:]
    finally:
        await switching.close()
        await store.close()
    assert "autocommit = True" in sent
    assert "autocommit = False" in sent


async def test_a_purge_deletes_chunks_in_batches_below_lock_escalation(wire: Wire) -> None:
    store = await open_store(URL)
    assert isinstance(store, MssqlDocumentStore)
    wire.deleted = [1000, 1000, 7]
    try:
        await store.purge_document("d")
    finally:
        await store.close()
    # (the id is a str, never NULL: pyodbc types it without asking the server)
    deletes = [line.split(" [untyped")[0] for line in wire.log if "DELETE" in line]
    assert deletes == ["execute DELETE TOP (1000) FROM dbo.chunks WHERE document_id = ?"] * 3
    first_delete = next(i for i, line in enumerate(wire.log) if "DELETE" in line)
    update = next(i for i, line in enumerate(wire.log) if line.startswith("execute UPDATE"))
    assert first_delete < update < wire.log.index("commit")  # one transaction


async def test_the_shared_purge_would_delete_every_chunk_in_one_statement(wire: Wire) -> None:
    """The former way, for comparison: store.py's single DELETE."""
    store = await open_store(URL)
    try:
        await SqlDocumentStore.purge_document(store, "d")
    finally:
        await store.close()
    (delete,) = [line for line in wire.log if "DELETE" in line]
    assert delete.startswith("execute DELETE FROM chunks WHERE chunks.document_id = ?")
