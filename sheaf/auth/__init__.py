"""Authentication and authorisation of API requests.

    keys           API keys: format, generation, SHA-256 hashes, constant-time checks
    entra          Entra ID tokens: JWKS cache and RS256 verification
    authenticator  Authorization header → Principal, by SHEAF_AUTH_MODE
    ratelimit      a token bucket per caller (uploads)
    errors         Unauthenticated (401), Forbidden (403), RateLimited (429)

`build_authenticator(settings, keys)` is the one place these are put together. The values
they work with — `Scope` (read < write < admin), `Grant`, `Principal`, API key records —
are domain types (`sheaf.domain.scopes`, `sheaf.domain.keys`).
"""

from __future__ import annotations

from sheaf.auth.authenticator import Authenticator
from sheaf.auth.entra import (
    EntraSettings,
    EntraVerifier,
    JwksCache,
    default_issuers,
    default_jwks_url,
)
from sheaf.config import Settings
from sheaf.domain.scopes import parse_role_scopes
from sheaf.ports import KeyStore

__all__ = ["Authenticator", "build_authenticator"]


def build_authenticator(settings: Settings, keys: KeyStore) -> Authenticator:
    """The authenticator SHEAF_AUTH_MODE asks for; opens nothing until a token arrives."""
    entra = None
    if "entra" in settings.auth_mode:
        tenant = settings.entra_tenant_id
        assert tenant is not None  # checked by Settings
        assert settings.entra_audience
        issuers = _split(settings.entra_issuer) or default_issuers(tenant)
        jwks = JwksCache(settings.entra_jwks_url or default_jwks_url(tenant))
        config = EntraSettings(
            audiences=_split(settings.entra_audience),
            issuers=issuers,
            role_grants=parse_role_scopes(settings.entra_role_scopes),
        )
        entra = EntraVerifier(config, jwks)
    return Authenticator(settings.auth_mode, keys=keys, entra=entra)


def _split(raw: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (raw or "").split(",") if v.strip())
