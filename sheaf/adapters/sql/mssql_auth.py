"""Microsoft Entra ID sign-in to Azure SQL: an access token instead of a password.

The token comes from an injected azure-identity credential (`DefaultAzureCredential`:
workload identity on AKS, managed identity on Azure compute), so no secret is configured
anywhere. ODBC takes it before connecting, through the `SQL_COPT_SS_ACCESS_TOKEN`
connection attribute, as a little-endian 4-byte length followed by the token's UTF-16-LE
bytes. A token is fetched once and reused until it comes within `REFRESH_MARGIN_SECONDS`
of expiry; every new connection then gets a fresh one. Connections already open are not
affected: the server checks the token at sign-in only.

The connection is made by an async creator (SQLAlchemy's `async_creator`), so the token
is awaited on the event loop for every connection, whoever opens it: the store, the pool
replacing a dropped connection, or the migrations.

SQL login (user and password in the URL) is the alternative and needs nothing from here;
it is also the only sign-in FreeTDS offers (it has no Entra ID support), so token sign-in
requires Microsoft's ODBC Driver 18, which the production image ships.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from sqlalchemy.engine import URL

from sheaf.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

SQL_COPT_SS_ACCESS_TOKEN = 1256  # msodbcsql.h: Microsoft's ODBC drivers only, not FreeTDS
AZURE_SQL_SCOPE = "https://database.windows.net/.default"
REFRESH_MARGIN_SECONDS = 300.0  # a token that expires sooner is replaced before connecting
# Keys that must not reach the driver beside a token. SQLAlchemy itself adds
# Trusted_Connection=Yes to URLs without a user, so that one is dropped; the others can
# only come from the URL, which then contradicts the token and is refused.
_DROPPED_KEYS = frozenset({"trusted_connection"})
_CONFLICTING_KEYS = frozenset({"uid", "pwd", "authentication"})

Connector = Callable[..., Awaitable[Any]]


def pack_access_token(token: str) -> bytes:
    """The `SQL_COPT_SS_ACCESS_TOKEN` value: a little-endian length, then UTF-16-LE bytes."""
    data = token.encode("utf-16-le")
    return struct.pack("<I", len(data)) + data


class AccessTokens:
    """Entra ID tokens for Azure SQL, fetched on demand and renewed before they expire.

    Safe to share among all the connections of one event loop; concurrent connects while a
    renewal is under way wait for that one renewal instead of each asking the credential.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        scope: str = AZURE_SQL_SCOPE,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._margin = refresh_margin
        self._clock = clock  # seconds since the epoch, as `AccessToken.expires_on`
        self._token: AccessToken | None = None
        self._renewing = asyncio.Lock()

    def due(self) -> bool:
        """True when there is no token yet, or it expires within the refresh margin."""
        token = self._token
        return token is None or token.expires_on - self._margin <= self._clock()

    async def current(self) -> str:
        """The token for a new connection, renewed first when it is close to expiry.

        A failed renewal raises `StoreUnavailable`, unless the old token has not expired
        yet: that one is used, and renewal is tried again at the next connect.
        """
        if self.due():
            async with self._renewing:
                if self.due():  # another connect may have renewed it while we waited
                    await self._renew()
        assert self._token is not None
        return self._token.token

    async def _renew(self) -> None:
        try:
            self._token = await self._fetch()
        except StoreUnavailable:
            old = self._token
            if old is None or old.expires_on <= self._clock():
                raise
            # The old token has not expired yet: sign in with it, renew at the next connect.

    async def _fetch(self) -> AccessToken:
        try:
            return await self._credential.get_token(self._scope)
        except AzureError as exc:  # no identity, or the token endpoint is unreachable
            raise StoreUnavailable(f"no Entra ID token for Azure SQL: {exc}") from exc

    async def connect_attributes(self) -> dict[int, bytes]:
        """The `attrs_before` entry that signs a new ODBC connection in."""
        return {SQL_COPT_SS_ACCESS_TOKEN: pack_access_token(await self.current())}


def token_connector(
    connect_kwargs: Mapping[str, Any], tokens: AccessTokens, connect: Connector
) -> Callable[[], Awaitable[Any]]:
    """An async creator: `connect(**connect_kwargs)` with a current token attached.

    `connect_kwargs` are what the dialect derives from the URL (`dsn` is the ODBC
    connection string); `connect` is `aioodbc.connect`, or a fake in tests.
    """
    dsn = token_connection_string(str(connect_kwargs["dsn"]))

    async def create() -> Any:
        attributes = {**connect_kwargs.get("attrs_before", {}), **await tokens.connect_attributes()}
        return await connect(**{**connect_kwargs, "dsn": dsn, "attrs_before": attributes})

    return create


def token_connection_string(dsn: str) -> str:
    """The ODBC connection string without the sign-in keys a token replaces.

    Microsoft's drivers refuse a token beside UID, PWD, Authentication or
    Trusted_Connection. Their connection resiliency (`ConnectRetryCount`) is turned off:
    it reconnects a broken idle connection with the token it was opened with, which may
    have expired by then; the pool opens a new connection, with a fresh token, instead.
    """
    kept = []
    if "freetds" in dsn.lower():
        raise ConfigError(
            "Entra ID sign-in needs Microsoft's ODBC Driver 18 for SQL Server; FreeTDS "
            "supports SQL login only (user and password in the URL)"
        )
    for part in filter(None, (p.strip() for p in dsn.split(";"))):
        key = part.split("=", 1)[0].strip().lower()
        if key in _CONFLICTING_KEYS:
            raise ConfigError(
                f"the SQL Server URL sets {part.split('=', 1)[0]!r}, but Entra ID sign-in uses "
                "an access token: remove the user, password and Authentication from the URL"
            )
        if key not in _DROPPED_KEYS | {"connectretrycount"}:
            kept.append(part)
    return ";".join([*kept, "ConnectRetryCount=0"])


def require_tokenless_url(url: URL) -> None:
    """Refuse a URL whose user or password would contradict token sign-in."""
    if url.username or url.password:
        raise ConfigError(
            "Entra ID sign-in takes no user or password: use mssql+aioodbc://@HOST/DB?driver=…"
        )
