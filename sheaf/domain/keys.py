"""API keys as values: what is known about a key, and what is stored (`sheaf.auth.keys` makes
and checks them; the `KeyStore` port keeps them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sheaf.domain.scopes import Principal, Scope, grants


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What anyone may know about a key: everything except the key itself."""

    id: str
    name: str
    scope: Scope
    collections: tuple[str, ...]  # collection names, or ("*",)
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def principal(self) -> Principal:
        subject = f"key:{self.id}"
        return Principal(subject, grants(self.scope, self.collections), rate_key=subject)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: str
    name: str
    scope: Scope
    collections: tuple[str, ...]
    secret_sha256: str


@dataclass(frozen=True, slots=True)
class StoredKey:
    key: ApiKey
    secret_sha256: str
