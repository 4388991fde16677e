"""SQL Server's keyword search, checked on sqlfluff's parse tree (no SQL Server runs here).

The full-text ranking must only ever return live chunks of the searched collection: it
joins the CONTAINSTABLE matches to `documents` on `chunks_token` (the full-text index is
populated asynchronously, so the join is what keeps results exact) and filters on the
collection. The batch that creates the full-text index must do nothing where the server
has no Full-Text Search. Each check also rejects a deliberately wrong statement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.dialects import mssql as mssql_dialect
from sqlfluff.core import FluffConfig, Linter
from sqlfluff.core.parser import BaseSegment

from sheaf.adapters.sql.mssql import (
    CONTAINS_RANKING,
    FULLTEXT_ACTIVE,
    contains_condition,
    contains_query,
)
from sheaf.domain.models import SearchFilter
from sheaf.domain.search import query_terms
from tests.unit.test_mssql_procedures import code_words, filter_columns, parse

pytestmark = pytest.mark.unit

FULLTEXT_BATCH = Path(__file__).resolve().parents[2] / "sql" / "migrations" / "mssql_fulltext.sql"


def rendered(filters: SearchFilter | None = None) -> str:
    query = contains_query("docs", ["crane", "harbour"], 5, filters)
    compiled = query.compile(
        dialect=mssql_dialect.dialect(), compile_kwargs={"literal_binds": True}
    )
    return f"{compiled};"


def unparsable(tree: BaseSegment) -> list[str]:
    return [segment.raw for segment in tree.recursive_crawl("unparsable")]


def visibility_problems(tree: BaseSegment) -> list[str]:
    problems = []
    if "CONTAINSTABLE" not in code_words(tree):
        problems.append("does not rank with CONTAINSTABLE")
    if not {"chunks_token", "lease_token", "status", "collection"} <= filter_columns(tree):
        problems.append("does not join the live chunks of one collection")
    return problems


@pytest.mark.parametrize(
    "filters",
    [None, SearchFilter(document_ids=("a", "b"), filename="*report?.pdf")],
)
def test_the_full_text_query_parses_and_returns_only_live_chunks(
    filters: SearchFilter | None,
) -> None:
    tree = parse(rendered(filters))
    assert unparsable(tree) == []
    assert visibility_problems(tree) == []


def test_the_check_rejects_a_ranking_without_the_live_join() -> None:
    leaky = parse(
        "SELECT TOP 5 ft.[KEY], ft.[RANK] FROM CONTAINSTABLE(dbo.chunks, [text], 'x') AS ft "
        "JOIN chunks ON chunks.id = ft.[KEY] WHERE chunks.collection = 'docs';"
    )
    assert unparsable(leaky) == []
    assert visibility_problems(leaky) == ["does not join the live chunks of one collection"]


def test_the_fixed_statements_parse() -> None:
    for sql in (CONTAINS_RANKING.replace(":condition", "'x'"), FULLTEXT_ACTIVE):
        assert unparsable(parse(f"{sql};")) == [], sql


def test_the_full_text_index_is_created_only_where_the_server_has_full_text_search() -> None:
    source = FULLTEXT_BATCH.read_text("utf-8")
    tree = parse(source)
    assert unparsable(tree) == []
    (batch,) = tree.recursive_crawl("batch")
    (statement,) = [s for s in batch.segments if s.is_type("statement")]
    (guarded,) = statement.segments  # the whole batch is one IF: nothing runs outside it
    assert guarded.is_type("if_then_statement")
    guard = next(guarded.recursive_crawl("if_clause"))
    assert "FULLTEXTSERVICEPROPERTY('IsFullTextInstalled')" in guard.raw
    assert "sys.fulltext_indexes" in guard.raw  # idempotent: a second run changes nothing
    assert "CHANGE_TRACKING = AUTO" in source
    linter = Linter(config=FluffConfig.from_path(str(FULLTEXT_BATCH.parents[2])))
    assert [v.desc() for v in linter.lint_string(source).violations] == []  # as sql/procedures


def test_a_query_cannot_break_out_of_the_contains_condition() -> None:
    terms = query_terms('crane") OR NEAR(("x" ~ * [y] ; DROP TABLE chunks --')
    condition = contains_condition(terms)
    assert condition.count('"') == 2 * len(terms)
    assert all(f'FORMSOF(INFLECTIONAL, "{t}")' in condition for t in terms)
    assert "'" not in condition
    assert set(terms) == {"crane", "near", "x", "y", "drop", "table", "chunks"}


def test_time_filters_render_as_comparisons_of_created_at() -> None:
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    query = contains_query("docs", ["crane"], 5, SearchFilter(uploaded_from=moment))
    assert "documents.created_at >=" in str(query.compile(dialect=mssql_dialect.dialect()))
