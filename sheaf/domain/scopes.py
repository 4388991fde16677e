"""Who may do what: scopes, grants and the principal a request acts as.

A grant is one scope over one collection (or `*`, every collection). Scopes are ordered,
each including the ones below it: `read` (list, get, search) < `write` (upload, delete,
retry) < `admin` (the cross-collection routes: stats, failed documents, the DLQ; these
need `admin` over `*`). An API key carries one scope over a list of collections; an Entra
ID token carries whatever its app roles and groups map to (`SHEAF_ENTRA_ROLE_SCOPES`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sheaf.domain.collections import COLLECTION_RE

ALL_COLLECTIONS = "*"


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Scope) -> bool:
        return self.rank >= other.rank


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


def parse_scope(raw: str) -> Scope:
    try:
        return Scope(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope {raw!r}: use one of {allowed}") from None


def check_collection_pattern(raw: str) -> str:
    """A collection name, or `*` for all of them."""
    name = raw.strip()
    if name != ALL_COLLECTIONS and not COLLECTION_RE.fullmatch(name):
        raise ValueError(
            f"invalid collection {name[:140]!r}: use `*` or 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Grant:
    scope: Scope
    collection: str  # a collection name or ALL_COLLECTIONS

    def covers(self, collection: str) -> bool:
        return self.collection in (ALL_COLLECTIONS, collection)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request, as the authenticator established it.

    `subject` names it in logs (`key:<id>`, `entra:<object id>`, `anonymous`) and never
    holds a secret. `rate_key` groups its uploads for the rate limit; None is unlimited.
    """

    subject: str
    grants: frozenset[Grant]
    rate_key: str | None = None

    def allows(self, scope: Scope, collection: str) -> bool:
        return any(g.scope.includes(scope) and g.covers(collection) for g in self.grants)

    def sees(self, collection: str) -> bool:
        """True when any grant names this collection: otherwise it does not exist for us."""
        return any(g.covers(collection) for g in self.grants)


ANONYMOUS = Principal("anonymous", frozenset({Grant(Scope.ADMIN, ALL_COLLECTIONS)}))
"""Every request while SHEAF_AUTH_MODE=none (allowed on a loopback address only)."""


def grants(scope: Scope, collections: Iterable[str]) -> frozenset[Grant]:
    return frozenset(Grant(scope, c) for c in collections)


_ENTRY = re.compile(r"^\s*(?P<name>[^=;]+?)\s*=\s*(?P<scope>[a-z]+)\s*(?::(?P<colls>[^;]*))?$")


def parse_role_scopes(raw: str) -> dict[str, frozenset[Grant]]:
    """`NAME=SCOPE[:COLLECTION,...];...` → grants per app role value or group object id.

    Without collections a role grants its scope over every collection. Raises
    `ValueError` naming the first entry that cannot be read.
    """
    mapping: dict[str, frozenset[Grant]] = {}
    for entry in filter(str.strip, raw.split(";")):
        match = _ENTRY.fullmatch(entry)
        if match is None:
            raise ValueError(f"cannot read {entry.strip()!r}: write ROLE=SCOPE[:COLLECTION,...]")
        scope = parse_scope(match["scope"])
        names = (match["colls"] or ALL_COLLECTIONS).split(",")
        collections = [check_collection_pattern(c) for c in names if c.strip()]
        found = grants(scope, collections or [ALL_COLLECTIONS])
        mapping[match["name"]] = mapping.get(match["name"], frozenset()) | found
    return mapping
