"""Entra ID sign-in for SQL Server: the token struct byte for byte, and when it is renewed."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from sqlalchemy import make_url

from sheaf.adapters.sql.mssql_auth import (
    AZURE_SQL_SCOPE,
    REFRESH_MARGIN_SECONDS,
    SQL_COPT_SS_ACCESS_TOKEN,
    AccessTokens,
    pack_access_token,
    require_tokenless_url,
    token_connection_string,
    token_connector,
)
from sheaf.errors import ConfigError, StoreUnavailable

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """An async azure-identity credential issuing numbered tokens valid for `lifetime`."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.scopes: list[tuple[str, ...]] = []
        self.failing = False

    async def get_token(self, *scopes: str, **_options: Any) -> AccessToken:
        await asyncio.sleep(0)  # a real credential awaits the token endpoint
        if self.failing:
            raise ClientAuthenticationError("the token endpoint said no")
        self.scopes.append(scopes)
        return AccessToken(f"token-{len(self.scopes)}", int(self.clock() + self.lifetime))

    async def close(self) -> None:
        pass


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def credential(clock: Clock) -> FakeCredential:
    return FakeCredential(clock)


@pytest.fixture
def tokens(credential: FakeCredential, clock: Clock) -> AccessTokens:
    return AccessTokens(credential, clock=clock)  # type: ignore[arg-type]


# -- the struct -------------------------------------------------------------------------------


def test_the_struct_is_a_little_endian_length_then_utf16le_bytes() -> None:
    assert SQL_COPT_SS_ACCESS_TOKEN == 1256
    assert pack_access_token("ab") == b"\x04\x00\x00\x00a\x00b\x00"
    assert pack_access_token("") == b"\x00\x00\x00\x00"


def test_the_length_counts_bytes_not_characters_in_little_endian() -> None:
    token = "eyJ0eXAiOiJKV1QiLC" * 50  # 900 characters, as long as a real JWT
    packed = pack_access_token(token)
    assert packed[:4] == (1800).to_bytes(4, "little") == b"\x08\x07\x00\x00"
    assert packed[4:] == token.encode("utf-16-le")
    assert struct.unpack("<I", packed[:4]) == (len(packed) - 4,)
    assert packed[4:6] == b"e\x00"  # every ASCII byte followed by a zero byte


# -- renewal ------------------------------------------------------------------------------------


async def test_a_token_is_fetched_once_for_azure_sql_and_reused(
    tokens: AccessTokens, credential: FakeCredential
) -> None:
    assert tokens.due()
    assert await tokens.current() == "token-1"
    assert await tokens.current() == "token-1"
    assert credential.scopes == [(AZURE_SQL_SCOPE,)]
    assert AZURE_SQL_SCOPE == "https://database.windows.net/.default"
    assert not tokens.due()


async def test_the_token_is_renewed_before_it_expires(
    tokens: AccessTokens, credential: FakeCredential, clock: Clock
) -> None:
    await tokens.current()
    expires = NOW + credential.lifetime
    clock.now = expires - REFRESH_MARGIN_SECONDS - 1
    assert await tokens.current() == "token-1"  # still more than the margin left
    clock.now = expires - REFRESH_MARGIN_SECONDS
    assert tokens.due()
    assert await tokens.current() == "token-2"  # renewed while the old one still worked
    assert len(credential.scopes) == 2


async def test_concurrent_connects_share_one_renewal(
    tokens: AccessTokens, credential: FakeCredential
) -> None:
    results = await asyncio.gather(*(tokens.current() for _ in range(10)))
    assert set(results) == {"token-1"}
    assert len(credential.scopes) == 1


async def test_a_failed_renewal_keeps_a_token_that_has_not_expired(
    tokens: AccessTokens, credential: FakeCredential, clock: Clock
) -> None:
    await tokens.current()
    credential.failing = True
    clock.now = NOW + credential.lifetime - 60  # within the margin, not expired
    assert await tokens.current() == "token-1"
    clock.now = NOW + credential.lifetime  # expired: nothing left to sign in with
    with pytest.raises(StoreUnavailable, match="no Entra ID token"):
        await tokens.current()
    credential.failing = False
    assert await tokens.current() == "token-2"


async def test_no_token_at_all_is_store_unavailable(
    tokens: AccessTokens, credential: FakeCredential
) -> None:
    credential.failing = True
    with pytest.raises(StoreUnavailable):
        await tokens.connect_attributes()


# -- the connection ----------------------------------------------------------------------------


async def test_each_new_connection_gets_the_current_token_before_connecting(
    tokens: AccessTokens, credential: FakeCredential, clock: Clock
) -> None:
    calls: list[dict[str, Any]] = []

    async def connect(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "connection"

    dsn = "DRIVER={ODBC Driver 18 for SQL Server};Server=db,1433;Trusted_Connection=Yes;Encrypt=yes"
    create = token_connector({"dsn": dsn, "attrs_before": {99: b"kept"}}, tokens, connect)
    assert await create() == "connection"
    clock.now = NOW + credential.lifetime  # the first token has expired
    await create()
    first, second = calls
    assert (
        first["dsn"]
        == "DRIVER={ODBC Driver 18 for SQL Server};Server=db,1433;Encrypt=yes;ConnectRetryCount=0"
    )
    assert first["attrs_before"] == {99: b"kept", 1256: pack_access_token("token-1")}
    assert second["attrs_before"][1256] == pack_access_token("token-2")


@pytest.mark.parametrize("key", ["UID=sa", "PWD=secret", "Authentication=ActiveDirectoryMsi"])
def test_sign_in_keys_beside_a_token_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="Entra ID"):
        token_connection_string(f"DRIVER={{ODBC Driver 18 for SQL Server}};Server=db;{key}")


def test_freetds_cannot_sign_in_with_a_token() -> None:
    with pytest.raises(ConfigError, match="FreeTDS supports SQL login only"):
        token_connection_string("DRIVER={FreeTDS};Server=db,1433;TDS_Version=7.4")


def test_a_token_url_carries_no_user_or_password() -> None:
    require_tokenless_url(
        make_url("mssql+aioodbc://@db/sheaf?driver=ODBC+Driver+18+for+SQL+Server")
    )
    with pytest.raises(ConfigError, match="no user or password"):
        require_tokenless_url(make_url("mssql+aioodbc://sa:pw@db/sheaf?driver=FreeTDS"))
