"""SQL Server plans that stay seeks, exact keys and bounded deletes (issue 16, points 3-4).

No SQL Server runs here: the proof is the parse tree of the procedures and of migration
0007's DDL (sqlfluff, tsql), the DDL every revision renders for SQL Server, and the SQL the
store compiles. Each check also runs on a deliberately wrong input it must reject.
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from alembic import op
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import String
from sqlalchemy.dialects import mssql as mssql_dialect
from sqlfluff.core.parser import BaseSegment

from sheaf.adapters.sql.schema import metadata
from sheaf.adapters.sql.store import cache_lookup, duplicate_check
from tests.unit.test_mssql_procedures import (
    CLAIMS,
    NAMES,
    body_statements,
    filter_columns,
    hints,
    parse,
    procedure,
    touches_documents,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "sql" / "migrations" / "versions"
STOCK_DIALECT: Any = mssql_dialect.dialect
CLAIM_INDEX = {
    "claim_queued_documents": "ix_documents_ready",
    "claim_queued_documents_v2": "ix_documents_ready",
    "claim_stale_dispatches": "ix_documents_status_last_dispatched",
    "find_expired_leases": "ix_documents_status_lease_expires",
}
ESCALATION_LOCKS = 5000  # locks one statement takes on one table before SQL Server escalates
BIN2 = "COLLATE Latin1_General_100_BIN2"
# Compared for equality with a caller's value: exact (binary) on SQL Server since 0007.
EXACT_KEYS = {
    ("documents", "id"),
    ("documents", "sha256"),
    ("documents", "lease_token"),
    ("documents", "chunks_token"),
    ("attempts", "document_id"),
    ("attempts", "lease_token"),
    ("chunks", "document_id"),
    ("chunks", "lease_token"),
    ("chunks", "content_sha256"),
}


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REVISION_0007 = load(VERSIONS / "0007_sql_server_keys_and_plans.py")


def mssql_history(monkeypatch: pytest.MonkeyPatch, last: str = "9999") -> list[str]:
    """Every statement the revisions up to `last` send SQL Server, in order: DDL and SQL."""
    sent: list[str] = []
    for path in sorted(p for p in VERSIONS.glob("0*.py") if p.name[:4] <= last):
        ddl = io.StringIO()
        dialect = STOCK_DIALECT(deprecate_large_types=True)
        context = MigrationContext.configure(
            dialect=dialect, opts={"as_sql": True, "output_buffer": ddl}
        )
        executed: list[str] = []

        def exec_driver_sql(sql: str, executed: list[str] = executed) -> Any:
            executed.append(sql)
            return SimpleNamespace(scalar=lambda: "dbo")

        bind = SimpleNamespace(dialect=dialect, exec_driver_sql=exec_driver_sql)
        with Operations.context(context):
            monkeypatch.setattr(op, "get_bind", lambda bind=bind: bind)
            load(path).upgrade()
        sent += [s for s in ddl.getvalue().split("\n\n") if s.strip()] + executed
    return sent


def column_types(statements: list[str]) -> dict[tuple[str, str], str]:
    """(table, column) → its SQL Server type and options after `statements`."""
    types: dict[tuple[str, str], str] = {}
    for statement in statements:
        text = " ".join(statement.split())
        if created := re.match(r"CREATE TABLE (\w+) \((.*)\)\s*;?$", text):
            table = created.group(1)
            for line in statement.splitlines()[1:]:
                if column := re.match(
                    r"\s+(\w+) ((?:N?VARCHAR|BIGINT|INTEGER|INT)\S*.*?),?\s*$", line
                ):
                    types[(table, column.group(1))] = column.group(2)
        for table, column, definition in re.findall(
            r"ALTER TABLE (?:dbo\.)?(\w+) (?:ALTER COLUMN|ADD) (\w+) ([^;]+)", text
        ):
            types[(table, column)] = definition.strip()
    return types


def index_columns(statements: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """index name → (key columns, INCLUDE columns) as the last statement creating it said."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    pattern = (
        r"CREATE (?:UNIQUE )?(?:CLUSTERED )?INDEX (\w+) ON (?:dbo\.)?\w+ \(([^)]*)\)"
        r"(?: INCLUDE \(([^)]*)\))?"
    )
    for statement in statements:
        for name, keys, included in re.findall(pattern, " ".join(statement.split())):
            found[name] = (
                [c.strip() for c in keys.split(",")],
                [c.strip() for c in included.split(",") if c.strip()],
            )
    return found


# -- point 3: seeks, the isolation the hints need, OUTPUT INTO ---------------------------------


def claim_statement(tree: BaseSegment) -> BaseSegment:
    (claim,) = [s for s in body_statements(tree) if touches_documents(s)]
    return claim


def forced_seek_problems(tree: BaseSegment, index: str) -> list[str]:
    found = hints(claim_statement(tree))
    wanted = {"READCOMMITTEDLOCK", "FORCESEEK", f"INDEX ({index.upper()})"}
    return [f"no {hint}" for hint in sorted(wanted - found)]


def test_the_seek_check_rejects_a_claim_with_the_old_hints() -> None:
    old = parse(
        (ROOT / "sql/migrations/snapshots/0004/mssql/claim_queued_documents_v2.sql").read_text()
    )
    assert forced_seek_problems(old, "ix_documents_ready") == [
        "no FORCESEEK",
        "no INDEX (IX_DOCUMENTS_READY)",
        "no READCOMMITTEDLOCK",
    ]


@pytest.mark.parametrize("name", CLAIMS)
def test_each_claim_reads_under_locking_read_committed_and_seeks_its_index(name: str) -> None:
    assert forced_seek_problems(procedure(name), CLAIM_INDEX[name]) == []


@pytest.mark.parametrize("name", CLAIMS)
def test_each_claim_index_includes_every_column_its_predicates_read(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A predicate column outside the index costs a key lookup per row read, under UPDLOCK."""
    keys, included = index_columns(mssql_history(monkeypatch))[CLAIM_INDEX[name]]
    covered = set(keys) | set(included) | {"id"}  # the clustered key is in every index
    read = filter_columns(claim_statement(procedure(name)))
    assert read <= covered, f"{CLAIM_INDEX[name]} lacks {sorted(read - covered)}"
    before = index_columns(mssql_history(monkeypatch, "0006"))[CLAIM_INDEX[name]]
    assert not read <= set(before[0]) | set(before[1]) | {"id"}  # what 0007 changed


def output_problems(tree: BaseSegment) -> list[str]:
    return [
        f"OUTPUT without INTO: {clause.raw.split()[1]}…"
        for clause in tree.recursive_crawl("output_clause")
        if not re.search(r"\bINTO\s+@\w+", clause.raw, flags=re.I)
    ]


def test_the_output_check_rejects_a_bare_output() -> None:
    old = parse(
        (ROOT / "sql/migrations/snapshots/0001/mssql/claim_stale_dispatches.sql").read_text()
    )
    assert output_problems(old) == ["OUTPUT without INTO: INSERTED.id…"]


@pytest.mark.parametrize("name", NAMES)
def test_every_output_goes_into_a_table_variable(name: str) -> None:
    assert output_problems(procedure(name)) == []


# -- point 4: bounded deletes, wide ids, exact keys, one string type ---------------------------


def delete_problems(tree: BaseSegment) -> list[str]:
    """Every DELETE from chunks removes fewer rows than escalate, and loops until done."""
    problems = []
    for delete in tree.recursive_crawl("delete_statement"):
        if "dbo.chunks" not in {r.raw.lower() for r in delete.recursive_crawl("table_reference")}:
            continue
        top = re.search(r"DELETE\s+TOP\s*\((\d+)\)", delete.raw, flags=re.I)
        if top is None or int(top.group(1)) >= ESCALATION_LOCKS:
            problems.append(f"unbounded: {' '.join(delete.raw.split())[:50]}")
    loops = list(tree.recursive_crawl("while_statement"))
    deletes_in_loops = sum(len(list(w.recursive_crawl("delete_statement"))) for w in loops)
    if deletes_in_loops != len(list(tree.recursive_crawl("delete_statement"))):
        problems.append("a DELETE outside a WHILE loop")
    return problems


def test_the_delete_check_rejects_an_unbounded_delete() -> None:
    old = parse((ROOT / "sql/migrations/snapshots/0001/mssql/find_expired_leases.sql").read_text())
    assert delete_problems(old) == [
        "unbounded: DELETE c FROM dbo.chunks AS c INNER JOIN @moved AS",
        "a DELETE outside a WHILE loop",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_chunk_deletes_stay_below_lock_escalation(name: str) -> None:
    assert delete_problems(procedure(name)) == []


def test_chunks_are_clustered_by_document(monkeypatch: pytest.MonkeyPatch) -> None:
    history = mssql_history(monkeypatch)
    assert index_columns(history)["cx_chunks_document"] == (["document_id", "id"], [])
    assert any("CREATE UNIQUE CLUSTERED INDEX cx_chunks_document" in s for s in history)
    assert any("pk_chunks PRIMARY KEY NONCLUSTERED (id)" in s for s in history)


def test_row_ids_are_bigint_and_keys_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    types = column_types(mssql_history(monkeypatch))
    assert types[("chunks", "id")].startswith("BIGINT")
    assert types[("attempts", "id")].startswith("BIGINT")
    for key in EXACT_KEYS:
        assert BIN2 in types[key], (key, types[key])
    before = column_types(mssql_history(monkeypatch, "0006"))
    assert before[("chunks", "id")].startswith("INTEGER")
    assert not any(BIN2 in before[key] for key in EXACT_KEYS)


def indexed_string_columns() -> set[tuple[str, str]]:
    """Every string column of an index or a key of schema.py: what lookups compare."""
    found = set()
    for table in metadata.tables.values():
        keyed = [index.columns for index in table.indexes] + [table.primary_key.columns]
        keyed += [c.columns for c in table.constraints if hasattr(c, "columns")]
        for columns in keyed:
            for column in columns:
                if isinstance(column.type, String):
                    found.add((table.name, column.name))
    return found


def test_every_indexed_string_column_has_the_type_strings_are_bound_as(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The adapter binds every str as NVARCHAR (test_mssql_engine's _wide_strings test); a
    VARCHAR column compared with it is converted row by row and its index is not sought."""
    types = column_types(mssql_history(monkeypatch))
    columns = indexed_string_columns()
    assert ("chunks", "content_sha256") in columns
    narrow = {c: types[c] for c in columns if not types[c].startswith("NVARCHAR")}
    assert narrow == {}
    before = column_types(mssql_history(monkeypatch, "0006"))
    assert before[("chunks", "content_sha256")].startswith("VARCHAR(64)")  # what 0007 fixed


# -- the store's lookups by key (issue 19, point 3) ----------------------------------------------


@pytest.mark.parametrize(
    ("query", "index", "key"),
    [
        (cache_lookup("c", "m", ["h1", "h2"]), "ix_chunks_content", ["content_sha256"]),
        (duplicate_check("c", "s"), "ix_documents_collection_sha256", ["collection", "sha256"]),
    ],
)
def test_the_stores_lookups_force_a_seek_on_an_index_leading_with_their_key(
    monkeypatch: pytest.MonkeyPatch, query: Any, index: str, key: list[str]
) -> None:
    sql = " ".join(str(query.compile(dialect=STOCK_DIALECT())).split())
    assert f"WITH (INDEX ({index}), FORCESEEK) WHERE" in sql
    keys, _ = index_columns(mssql_history(monkeypatch))[index]
    assert keys[: len(key)] == key


def test_the_0007_ddl_parses_as_t_sql() -> None:
    for statement in [*REVISION_0007.MSSQL_UPGRADE, *REVISION_0007.MSSQL_DOWNGRADE]:
        tree = parse(statement.strip().rstrip(";") + ";\n")
        assert [s.raw[:60] for s in tree.recursive_crawl("unparsable")] == [], statement


def variable_token_problems(source: str) -> list[str]:
    """Token comparisons between two variables, which use the database's collation."""
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    pattern = r"(@\w*token\w*\s*=\s*@\w*token\w*)(?!\s+COLLATE Latin1_General_100_BIN2)"
    return [" ".join(found.split()) for found in re.findall(pattern, code)]


def test_the_token_check_rejects_a_case_insensitive_comparison() -> None:
    old = (ROOT / "sql/migrations/snapshots/0001/mssql/release_document_lease.sql").read_text()
    assert variable_token_problems(old) == ["@current_token = @lease_token"]


@pytest.mark.parametrize("name", NAMES)
def test_tokens_held_in_variables_are_compared_exactly(name: str) -> None:
    source = (ROOT / "sql" / "procedures" / "mssql" / f"{name}.sql").read_text()
    assert variable_token_problems(source) == []
