"""The T-SQL procedures keep the lease design, checked on sqlfluff's parse tree.

No SQL Server runs here, so these tests are the proof that each procedure in
`sql/procedures/mssql/` is written the way docs/leases.md says: every claim is one
UPDATE that picks and changes its rows under UPDLOCK, READPAST and ROWLOCK and returns
them with OUTPUT; acquire-by-id waits (SET LOCK_TIMEOUT) instead of skipping; the clock is
SYSUTCDATETIME() only; every UPDATE and DELETE compares the lease token. Each check is
also run on a deliberately wrong snippet, which it must reject: a check that passes
everything proves nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from sqlfluff.core import FluffConfig, Linter
from sqlfluff.core.parser import BaseSegment

from sheaf.adapters.sql import mssql

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROCEDURES = ROOT / "sql" / "procedures" / "mssql"
CLAIMS = (
    "claim_queued_documents",
    "claim_queued_documents_v2",
    "claim_stale_dispatches",
    "find_expired_leases",
)
CLAIM_COLUMNS = {"document_id", "collection", "lease_token", "lease_expires_at", "attempt"} | {
    "dispatch_seq",
    "blob_key",
    "content_type",
}
CLAIM_HINTS = {"UPDLOCK", "READPAST", "ROWLOCK"}
OTHER_CLOCKS = {"GETDATE", "GETUTCDATE", "SYSDATETIME", "SYSDATETIMEOFFSET", "CURRENT_TIMESTAMP"}
CALLS = {  # what the adapter EXECs, and the result columns it reads
    "acquire_document_lease": (
        mssql._ACQUIRE,
        {"outcome", "status", "dispatch_seq", "not_before", "lease_token"}
        | {"lease_expires_at", "attempt", "collection", "blob_key", "content_type"},
    ),
    "renew_document_lease": (mssql._RENEW, {"renewed"}),
    "complete_document_lease": (mssql._COMPLETE, {"completed"}),
    "release_document_lease": (
        mssql._RELEASE,
        {"applied", "status", "not_before", "dispatch_seq"},
    ),
    "find_expired_leases": (
        mssql._FIND_EXPIRED,
        {"document_id", "collection", "dispatch_seq", "status", "not_before"},
    ),
    # v1 is no longer called (0004's v2 replaced it) but stays installed for the workers
    # of the previous release during a rolling upgrade: it must still match its call.
    "claim_queued_documents": (
        mssql._procedure("claim_queued_documents", "worker_id", "lease_seconds", "limit"),
        CLAIM_COLUMNS,
    ),
    "claim_queued_documents_v2": (mssql._CLAIM_QUEUED, CLAIM_COLUMNS),
    "claim_stale_dispatches": (
        mssql._CLAIM_STALE,
        {"document_id", "collection", "dispatch_seq", "status", "not_before"},
    ),
}
NAMES = sorted(CALLS)


@cache
def parse(sql: str) -> BaseSegment:
    """The parse tree under the repository's .sqlfluff (tsql dialect)."""
    tree = Linter(config=FluffConfig.from_path(str(ROOT))).parse_string(sql).tree
    assert tree is not None
    return tree


def procedure(name: str) -> BaseSegment:
    return parse((PROCEDURES / f"{name}.sql").read_text(encoding="utf-8"))


def body_statements(tree: BaseSegment) -> list[BaseSegment]:
    """The statements directly inside the procedure's outer BEGIN … END."""
    create = next(tree.recursive_crawl("create_procedure_statement"))
    block = next(create.recursive_crawl("begin_end_block"))
    return [s.segments[0] for s in block.segments if s.is_type("statement")]


def writes(tree: BaseSegment) -> Iterator[BaseSegment]:
    """Every UPDATE and DELETE, taken with its WITH clause when it has one."""
    for found in tree.recursive_crawl(
        "with_compound_statement", "update_statement", "delete_statement", recurse_into=False
    ):
        if found.is_type("with_compound_statement"):
            if any(found.recursive_crawl("update_statement", "delete_statement")):
                yield found
        else:
            yield found


def touches_documents(segment: BaseSegment) -> bool:
    return any(
        ref.raw.lower() == "dbo.documents" for ref in segment.recursive_crawl("table_reference")
    )


def hints(segment: BaseSegment) -> set[str]:
    return {hint.raw.upper() for hint in segment.recursive_crawl("query_hint_segment")}


def filter_columns(statement: BaseSegment) -> set[str]:
    """Columns named in the WHERE and JOIN … ON conditions of a statement (its CTE too)."""
    conditions = statement.recursive_crawl("where_clause", "join_on_condition")
    return {
        ref.raw.split(".")[-1].lower()
        for condition in conditions
        for ref in condition.recursive_crawl("column_reference")
    }


def code_words(tree: BaseSegment) -> set[str]:
    return {
        seg.raw.upper()
        for seg in tree.raw_segments
        if not seg.is_type("comment", "inline_comment", "block_comment")
    }


def first_line(segment: BaseSegment) -> int:
    assert segment.pos_marker is not None
    return segment.pos_marker.working_line_no


# -- the checks, each usable on any parse tree ----------------------------------------------


def claim_problems(tree: BaseSegment) -> list[str]:
    """Why `tree` is not one UPDATE … WITH (UPDLOCK, READPAST, ROWLOCK) … OUTPUT claim."""
    touching = [s for s in body_statements(tree) if touches_documents(s)]
    if len(touching) != 1:
        return [f"documents is read or written by {len(touching)} statements, not one"]
    (claim,) = touching
    problems = []
    updates = list(claim.recursive_crawl("update_statement"))
    if len(updates) != 1:
        problems.append("the statement is not exactly one UPDATE")
    if not hints(claim) >= CLAIM_HINTS:
        problems.append(f"hints {sorted(hints(claim))} lack {sorted(CLAIM_HINTS - hints(claim))}")
    if not any(claim.recursive_crawl("output_clause")):
        problems.append("no OUTPUT clause returns the claimed rows")
    if "TOP" not in code_words(claim):
        problems.append("no TOP bounds the claim")
    return problems


def token_problems(tree: BaseSegment) -> list[str]:
    return [
        f"line {first_line(write)}: a write that does not compare lease_token"
        for write in writes(tree)
        if "lease_token" not in filter_columns(write)
    ]


def clock_problems(tree: BaseSegment) -> list[str]:
    problems = [f"uses {word}" for word in sorted(code_words(tree) & OTHER_CLOCKS)]
    if "SYSUTCDATETIME" not in code_words(tree):
        problems.append("never reads SYSUTCDATETIME()")
    return problems


RACY_CLAIM = """
CREATE OR ALTER PROCEDURE dbo.racy @limit INT AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @picked TABLE (id NVARCHAR(36));
    INSERT INTO @picked (id)
    SELECT TOP (@limit) d.id FROM dbo.documents AS d WHERE d.status = N'queued';
    UPDATE d SET status = N'processing', updated_at = GETDATE()
    FROM dbo.documents AS d WITH (UPDLOCK, ROWLOCK)
    INNER JOIN @picked AS p ON d.id = p.id;
END;
"""

BLOCKING_CLAIM = """
CREATE OR ALTER PROCEDURE dbo.blocking @limit INT AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    UPDATE TOP (@limit) dbo.documents WITH (UPDLOCK, ROWLOCK)
    SET status = N'processing', updated_at = SYSUTCDATETIME()
    WHERE status = N'queued' AND lease_token IS NULL;
END;
"""


def test_the_checks_reject_a_racy_claim() -> None:
    racy = parse(RACY_CLAIM)
    assert claim_problems(racy) == ["documents is read or written by 2 statements, not one"]
    assert token_problems(racy)
    assert clock_problems(racy) == ["uses GETDATE", "never reads SYSUTCDATETIME()"]


def test_the_checks_reject_a_claim_that_waits_and_returns_nothing() -> None:
    blocking = parse(BLOCKING_CLAIM)
    assert claim_problems(blocking) == [
        "hints ['ROWLOCK', 'UPDLOCK'] lack ['READPAST']",
        "no OUTPUT clause returns the claimed rows",
    ]
    assert token_problems(blocking) == []
    assert clock_problems(blocking) == []


# -- the procedures -----------------------------------------------------------------------------


def test_there_is_one_file_per_lease_procedure() -> None:
    assert sorted(path.stem for path in PROCEDURES.glob("*.sql")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_parses_without_unparsable_sections(name: str) -> None:
    tree = procedure(name)
    unparsable = [seg.raw[:60] for seg in tree.recursive_crawl("unparsable")]
    assert unparsable == []


@pytest.mark.parametrize("name", NAMES)
def test_is_one_create_or_alter_procedure_with_typed_parameters(name: str) -> None:
    tree = procedure(name)
    (create,) = tree.recursive_crawl("create_procedure_statement")
    words = [seg.raw.upper() for seg in create.segments if seg.is_type("keyword")][:4]
    assert words == ["CREATE", "OR", "ALTER", "PROCEDURE"]
    assert next(create.recursive_crawl("object_reference")).raw == f"dbo.{name}"
    (parameters,) = create.recursive_crawl("procedure_parameter_list")
    names = [seg for seg in parameters.segments if seg.is_type("parameter")]
    types = [seg for seg in parameters.segments if seg.is_type("data_type")]
    assert len(names) == len(types) > 0


@pytest.mark.parametrize("name", NAMES)
def test_starts_with_nocount_and_xact_abort(name: str) -> None:
    first, second = (" ".join(s.raw.split()).upper() for s in body_statements(procedure(name))[:2])
    assert (first, second) == ("SET NOCOUNT ON", "SET XACT_ABORT ON")


@pytest.mark.parametrize("name", NAMES)
def test_the_database_clock_is_sysutcdatetime_only(name: str) -> None:
    assert clock_problems(procedure(name)) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_write_compares_the_lease_token(name: str) -> None:
    tree = procedure(name)
    assert list(writes(tree)), "a lease procedure that writes nothing"
    assert token_problems(tree) == []


@pytest.mark.parametrize("name", CLAIMS)
def test_every_claim_is_one_update_with_the_three_hints_and_output(name: str) -> None:
    assert claim_problems(procedure(name)) == []


@pytest.mark.parametrize("name", CLAIMS)
def test_a_claim_reads_no_row_before_its_update(name: str) -> None:
    statements = body_statements(procedure(name))
    claim = next(i for i, s in enumerate(statements) if touches_documents(s))
    earlier_selects = [
        s.raw[:40] for s in statements[:claim] if any(s.recursive_crawl("select_statement"))
    ]
    assert earlier_selects == []


def test_acquire_waits_with_lock_timeout_and_never_skips() -> None:
    tree = procedure("acquire_document_lease")
    timeouts = [s for s in tree.recursive_crawl("set_segment") if "LOCK_TIMEOUT" in s.raw.upper()]
    reads = [
        s
        for s in tree.recursive_crawl("select_statement")
        if touches_documents(s) and "UPDLOCK" in hints(s)
    ]
    assert timeouts
    assert reads, "acquire must lock the row it is about to lease"
    assert first_line(timeouts[0]) < first_line(reads[0])
    assert "READPAST" not in code_words(tree)
    catch = next(tree.recursive_crawl("try_catch"))
    assert "1222" in catch.raw.split("BEGIN CATCH", 1)[1]  # the timeout answers 'held'


@pytest.mark.parametrize("name", ["acquire_document_lease", "claim_queued_documents"])
def test_tokens_are_new_uniqueidentifiers(name: str) -> None:
    assert "NEWID" in code_words(procedure(name))


@pytest.mark.parametrize("name", NAMES)
def test_transactions_are_balanced(name: str) -> None:
    tree = procedure(name)
    raw = [" ".join(s.raw.upper().split()) for s in tree.recursive_crawl("transaction_statement")]
    begun = raw.count("BEGIN TRANSACTION")
    assert begun == raw.count("COMMIT TRANSACTION")
    assert begun == (0 if name == "claim_stale_dispatches" else 1)  # one statement needs none


@pytest.mark.parametrize("name", NAMES)
def test_the_adapter_passes_exactly_the_procedures_parameters(name: str) -> None:
    statement, _ = CALLS[name]
    (parameters,) = procedure(name).recursive_crawl("procedure_parameter_list")
    declared = {seg.raw.lstrip("@") for seg in parameters.segments if seg.is_type("parameter")}
    passed = set(re.findall(r"@(\w+) = :\1", str(statement)))
    assert passed == declared
    assert f"EXEC dbo.{name} " in str(statement)


@pytest.mark.parametrize("name", NAMES)
def test_the_result_has_the_columns_the_adapter_reads(name: str) -> None:
    _, wanted = CALLS[name]
    last = body_statements(procedure(name))[-1]
    if any(last.recursive_crawl("output_clause")):  # the claim itself returns its rows
        returned = _output_names(next(last.recursive_crawl("output_clause")))
    else:
        returned = {_column_name(e) for e in last.recursive_crawl("select_clause_element")}
    assert returned == wanted


def _column_name(element: BaseSegment) -> str:
    aliases = list(element.recursive_crawl("alias_expression"))
    source = aliases[-1] if aliases else element
    return source.raw.split()[-1].split(".")[-1].lower()


def _output_names(clause: BaseSegment) -> set[str]:
    columns = clause.raw.split("OUTPUT", 1)[1].split(" INTO ", 1)[0]
    return {column.split()[-1].split(".")[-1].lower() for column in columns.split(",")}


@pytest.mark.parametrize("name", NAMES)
def test_text_the_parser_accepts_but_sql_server_would_not(name: str) -> None:
    source = (PROCEDURES / f"{name}.sql").read_text(encoding="utf-8")
    # ODBC drivers take "?" as a parameter marker, even inside a comment.
    assert "?" not in source
    # GO separates batches in client tools; the server itself rejects it.
    assert not re.search(r"^\s*GO\s*$", source, flags=re.I | re.M)
    # A semicolon between END and ELSE ends the IF: SQL Server then rejects the ELSE.
    assert not re.search(r"END\s*;\s*(--[^\n]*\s*)*ELSE", source, flags=re.I)
