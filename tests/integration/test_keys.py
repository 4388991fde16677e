"""API keys on every backend: the store contract, the CLI, and the API on a real database.

The contract runs against the in-memory fake and each SQL backend (`store_url` of
tests/integration/conftest.py), which keeps the fake honest. Other tests' keys may be in
the shared PostgreSQL database, so each test only looks at keys it made.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from api.app import create_app
from sheaf.adapters.sql.keys import open_key_store
from sheaf.adapters.sql.migrate import upgrade
from sheaf.auth.keys import new_key, secret_hash
from sheaf.cli import main
from sheaf.config import Settings
from sheaf.domain.scopes import Scope
from sheaf.errors import ConfigError
from sheaf.ports import KeyStore

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def keys(store_url: str) -> AsyncIterator[KeyStore]:
    if store_url == "memory":
        from sheaf.testing import InMemoryKeyStore

        yield InMemoryKeyStore()
        return
    store = open_key_store(store_url)
    try:
        yield store
    finally:
        await store.close()


async def test_a_created_key_is_found_by_its_id_with_its_hash(keys: KeyStore) -> None:
    token, record = new_key("Grüße bot — ingest", Scope.WRITE, ["legal", "hr.archive"])
    before = datetime.now(UTC) - timedelta(seconds=5)
    created = await keys.create_key(record)
    assert (created.id, created.name, created.scope) == (record.id, record.name, Scope.WRITE)
    assert created.collections == ("legal", "hr.archive")
    assert created.revoked_at is None
    assert before <= created.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    stored = await keys.find_key(record.id)
    assert stored is not None
    assert stored.key == created
    assert stored.secret_sha256 == secret_hash(token)
    assert await keys.find_key("0" * 16) is None


async def test_keys_are_listed_oldest_first_revoked_ones_too(keys: KeyStore) -> None:
    made = []
    for n in range(3):
        _, record = new_key(f"key {n}", Scope.READ, ["*"])
        made.append((await keys.create_key(record)).id)
    await keys.revoke_key(made[1])
    listed = [k for k in await keys.list_keys() if k.id in made]
    assert [k.id for k in listed] == made
    assert [k.revoked for k in listed] == [False, True, False]
    assert listed[0].collections == ("*",)


async def test_revocation_is_permanent_and_idempotent(keys: KeyStore) -> None:
    _, record = new_key("to revoke", Scope.ADMIN, ["a"])
    await keys.create_key(record)
    first = await keys.revoke_key(record.id)
    assert first is not None
    assert first.revoked_at is not None
    again = await keys.revoke_key(record.id)
    assert again is not None
    assert again.revoked_at == first.revoked_at
    stored = await keys.find_key(record.id)
    assert stored is not None
    assert stored.key.revoked
    assert await keys.revoke_key("f" * 16) is None


# -- the CLI ------------------------------------------------------------------------------


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    path = tmp_path / "sheaf.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    env = {"SHEAF_DATABASE_URL": f"sqlite+aiosqlite:///{path}"}
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["keys", "create", "--name", "ingest bot", "--scope", "write", "--collection", "legal"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    [token] = [line for line in created.stdout.splitlines() if line.startswith("sk_sheaf_")]
    key_id = token[len("sk_sheaf_") :][:16]
    assert "not shown again" in created.stderr

    listed = runner.invoke(main, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"{key_id}\s+write\s+legal\s+created .* active\s+ingest bot", listed.stdout)
    assert token[26:] not in listed.output

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
    assert token not in repr(rows)
    assert token[26:] not in repr(rows)  # not even the secret part
    assert secret_hash(token) in repr(rows)

    revoked = runner.invoke(main, ["keys", "revoke", key_id], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in runner.invoke(main, ["keys", "list"], env=env).stdout
    unknown = runner.invoke(main, ["keys", "revoke", "0" * 16], env=env)
    assert unknown.exit_code == 1
    assert "no API key" in unknown.output


def test_cli_refuses_bad_keys_and_explains_a_new_database(tmp_path: Path) -> None:
    env = {"SHEAF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"}
    runner = CliRunner()
    bad = runner.invoke(
        main, ["keys", "create", "--name", "x", "--scope", "read", "--collection", "a b"], env=env
    )
    assert bad.exit_code == 2
    assert "invalid collection" in bad.output
    missing = runner.invoke(main, ["keys", "list"], env=env)
    assert missing.exit_code == 1
    assert "sheaf db upgrade" in missing.output


async def test_a_database_without_the_table_says_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    store = open_key_store(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(ConfigError, match="sheaf db upgrade"):
            await store.list_keys()
    finally:
        await store.close()


# -- the API on a real database: keys share the document store's engine ------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    upgrade(url)
    return url


async def test_the_api_checks_keys_in_its_database(
    aiohttp_client: MakeClient, database_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {}, database_url=database_url, blob_dir=tmp_path / "blobs", auth_mode="keys"
    )
    client = await aiohttp_client(create_app(settings, housekeeping=False))
    store = open_key_store(database_url)
    try:
        token, record = new_key("reader", Scope.READ, ["a"])
        await store.create_key(record)
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/v1/collections/a/documents", headers=headers)).status == 200
        assert (await client.get("/v1/collections/b/documents", headers=headers)).status == 404
        assert (await client.get("/v1/stats", headers=headers)).status == 403
        await store.revoke_key(record.id)  # from another process, as `sheaf keys revoke` does
        response = await client.get("/v1/collections/a/documents", headers=headers)
        assert response.status == 401
    finally:
        await store.close()
