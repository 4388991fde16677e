"""Shared fixtures: real services when they are reachable, required when CI=true.

A test that needs PostgreSQL asks for `postgres_url`: it gets a fresh, migrated database
of its own for the whole session (dropped afterwards). Where the server is unreachable the
test is skipped with the reason shown in the summary, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import uuid
from collections.abc import Iterator
from types import ModuleType

import pytest

# Fixtures of the local emulators, registered here so that test modules may also import
# their types (a module imported before it is registered could not be assertion-rewritten).
pytest_plugins = ["tests.azurite_fixtures", "tests.servicebus_fixtures"]

PG_ADMIN_DSN = os.environ.get("SHEAF_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, reason: str) -> None:
    """Skip with a visible reason locally; fail in CI, where every service must be there."""
    message = f"{name} unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (required because CI=true)")
    pytest.skip(message)


ODBC_MISSING = (
    "the ODBC client stack does not import ({error}): install unixODBC and FreeTDS "
    "(apt-get install unixodbc tdsodbc) to run the SQL Server driver tests"
)


def odbc_module(name: str) -> ModuleType:
    """`pyodbc` or `aioodbc`, imported at a test module's top.

    Both load libodbc when imported, so on a machine without the ODBC libraries the whole
    module is skipped with the reason shown; under CI=true, where they are installed, a
    failed import is a collection error instead.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = ODBC_MISSING.format(error=exc)
        if IN_CI:
            pytest.fail(f"{message} (required because CI=true)", pytrace=False)
        pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def tesseract() -> str:
    """The Tesseract program that OCR runs (Debian package tesseract-ocr)."""
    found = shutil.which("tesseract")
    if found is None:
        require_service("tesseract", "OCR tests need the Debian package tesseract-ocr")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A libpq DSN of a fresh empty database, dropped at the end of the session."""
    with _database() as dsn:
        yield dsn


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An async SQLAlchemy URL of a fresh empty database of this test's own."""
    with _database() as dsn:
        yield dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@contextlib.contextmanager
def _database() -> Iterator[str]:
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - dev extra missing
        require_service("PostgreSQL", "psycopg2 is not installed (pip install -e '.[dev]')")
    try:
        admin = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        require_service("PostgreSQL", f"cannot connect to {PG_ADMIN_DSN}: {exc}".strip())
    admin.autocommit = True
    name = f"sheaf_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url(postgres_dsn: str) -> str:
    """The same database as a SQLAlchemy async URL."""
    return postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test belongs to the tier of its folder, so `pytest -m unit` selects by tier."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/{'|'.join(TIERS)}/")
        item.add_marker(tier)
