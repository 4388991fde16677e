"""Frozen procedure history: each revision installs its own copy of the procedures it changes.

A migration that installs or changes a PostgreSQL function or a SQL Server procedure
copies its text to `sql/migrations/snapshots/<revision>/<postgres|mssql>/<name>.sql` and
installs that copy with `install_snapshots(op.get_bind(), revision)`, never the live file
of `sql/procedures/`. Editing a procedure later then cannot change what an old revision
installs: every database, whatever revision it started from, ends `upgrade head` with the
same text. `sql/procedures/` stays the current version: the newest snapshot of each
procedure (a test compares them). SQLite has no procedures; there every call is a no-op.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from sheaf.adapters.sql.migrate import sql_dir

# A dialect's name (`Connection.dialect.name`) → its directory under snapshots/<revision>/.
DIRECTORIES = {"postgresql": "postgres", "mssql": "mssql"}


def snapshot_dir(revision: str, dialect: str) -> Path | None:
    """`sql/migrations/snapshots/<revision>/<postgres|mssql>`; None for SQLite."""
    directory = DIRECTORIES.get(dialect)
    if directory is None:
        return None
    return sql_dir() / "migrations" / "snapshots" / revision / directory


def snapshot_names(revision: str, dialect: str) -> list[str]:
    """The procedures `revision` installs on `dialect`, by name, in installation order."""
    directory = snapshot_dir(revision, dialect)
    if directory is None or not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.sql"))


def read_snapshot(revision: str, dialect: str, name: str) -> str:
    """The text of procedure `name` as `revision` installs it on `dialect`."""
    directory = snapshot_dir(revision, dialect)
    if directory is None:
        raise ValueError(f"{dialect} has no stored procedures")
    return (directory / f"{name}.sql").read_text(encoding="utf-8")


def install_snapshots(bind: Connection, revision: str, *names: str) -> list[str]:
    """Install `revision`'s snapshots for the bind's dialect: `names`, or all of them.

    Each file is one `CREATE OR REPLACE FUNCTION` (PostgreSQL) or `CREATE OR ALTER
    PROCEDURE` (SQL Server), run as one batch. Returns the names installed.
    """
    dialect = bind.dialect.name
    chosen = list(names) or snapshot_names(revision, dialect)
    if snapshot_dir(revision, dialect) is None:
        return []
    for name in chosen:
        bind.exec_driver_sql(read_snapshot(revision, dialect, name))
    return chosen


def drop_procedures(bind: Connection, *names: str) -> None:
    """A downgrade's undo of `install_snapshots` for procedures the revision introduced."""
    for name in names:
        if bind.dialect.name == "mssql":
            bind.exec_driver_sql(f"DROP PROCEDURE IF EXISTS dbo.{name}")
        elif bind.dialect.name == "postgresql":
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}")
