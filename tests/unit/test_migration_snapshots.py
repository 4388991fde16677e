"""Frozen procedure history (issue 16, point 2), checked on the files.

Each revision installs its own copies, `sql/migrations/snapshots/<revision>/<dialect>/`;
`sql/procedures/<dialect>/` is the current version and must equal the newest snapshot of
every procedure, or a fresh `upgrade head` would install something else than the code
expects. The databases themselves are compared in tests/integration/test_migrations.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sheaf.adapters.sql.migrate import sql_dir
from sheaf.adapters.sql.snapshots import DIRECTORIES, read_snapshot, snapshot_names

pytestmark = pytest.mark.unit

SQL = sql_dir()
SNAPSHOTS = SQL / "migrations" / "snapshots"
SCRIPTS = sorted((SQL / "migrations" / "versions").glob("0*.py"))
REVISIONS = [re.search(r'^revision = "(\w+)"', p.read_text(), re.M) for p in SCRIPTS]


def revision_ids() -> list[str]:
    found = [match.group(1) for match in REVISIONS if match is not None]
    assert len(found) == len(SCRIPTS)
    return found


def newest(dialect: str) -> dict[str, str]:
    """Each procedure's text as the newest revision that installs it left it."""
    latest: dict[str, str] = {}
    for revision in sorted(revision_ids()):
        for name in snapshot_names(revision, dialect):
            latest[name] = read_snapshot(revision, dialect, name)
    return latest


@pytest.mark.parametrize(("dialect", "directory"), sorted(DIRECTORIES.items()))
def test_the_live_procedures_are_the_newest_snapshots(dialect: str, directory: str) -> None:
    live = {
        path.stem: path.read_text(encoding="utf-8")
        for path in (SQL / "procedures" / directory).glob("*.sql")
    }
    assert newest(dialect) == live


def test_every_snapshot_belongs_to_a_revision() -> None:
    revisions = set(revision_ids())
    assert {path.name for path in SNAPSHOTS.iterdir()} <= revisions
    for revision_dir in SNAPSHOTS.iterdir():
        assert {path.name for path in revision_dir.iterdir()} <= set(DIRECTORIES.values())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_no_revision_reads_the_live_procedures(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    assert '"procedures"' not in source
    assert "sql/procedures" not in source
