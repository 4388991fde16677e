"""From an `Authorization` header to the `Principal` a request acts as.

`SHEAF_AUTH_MODE` says which credentials count: `none` (everyone is `ANONYMOUS`, an admin;
allowed on a loopback address only), `keys`, `entra`, or `keys+entra`. Keys are looked up
on every request, so a revoked key stops working at once in every process.
"""

from __future__ import annotations

import logging

from sheaf.auth.entra import EntraVerifier
from sheaf.auth.errors import Unauthenticated
from sheaf.auth.keys import is_api_key, key_id_of, matches
from sheaf.domain.scopes import ANONYMOUS, Principal
from sheaf.ports import KeyStore

log = logging.getLogger(__name__)

NO_CREDENTIALS = (
    "no credentials: send the header `Authorization: Bearer <API key or Entra ID token>` "
    "(create a key with `sheaf keys create`)"
)


class Authenticator:
    def __init__(
        self, mode: str, *, keys: KeyStore | None = None, entra: EntraVerifier | None = None
    ) -> None:
        self.mode = mode
        self._keys = keys if "keys" in mode else None
        self._entra = entra if "entra" in mode else None

    @property
    def required(self) -> bool:
        return self.mode != "none"

    async def principal(self, authorization: str | None) -> Principal:
        if not self.required:
            return ANONYMOUS
        token = _bearer(authorization)
        if is_api_key(token):
            return await self._key_principal(token)
        if self._entra is None:
            raise Unauthenticated("the bearer token is not a Sheaf API key (sk_sheaf_…)")
        return await self._entra.principal(token)

    async def close(self) -> None:
        if self._entra is not None:
            await self._entra.close()

    async def _key_principal(self, token: str) -> Principal:
        if self._keys is None:
            raise Unauthenticated("API keys are not accepted here (SHEAF_AUTH_MODE=entra)")
        key_id = key_id_of(token)
        stored = await self._keys.find_key(key_id) if key_id else None
        if stored is None or not matches(token, stored) or stored.key.revoked:
            log.info("API key refused", extra={"key_id": key_id or "malformed"})
            raise Unauthenticated("the API key is unknown or revoked")
        return stored.key.principal()


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(NO_CREDENTIALS)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(NO_CREDENTIALS)
    return token.strip()
