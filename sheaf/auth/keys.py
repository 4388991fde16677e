"""API keys: made here, shown once, stored only as a hash.

A key reads `sk_sheaf_<id>_<secret>`: the fixed prefix tells a key from a JWT at a glance
(and lets secret scanners find leaked ones), `<id>` (16 hex digits) is the public name of
the key — what `sheaf keys list` shows, what logs name, and how the store finds its row —
and `<secret>` is 256 random bits. The store keeps the SHA-256 of the whole key, never the
key. A fast hash is the right one here: slow password hashes (bcrypt, Argon2) protect
secrets people chose, which are guessable; nobody can enumerate 2**256 secrets however
cheap each guess is, while a slow hash would cost every request milliseconds of CPU.
Hashes are compared in constant time, so response timing reveals nothing of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence

from sheaf.domain.keys import NewApiKey, StoredKey
from sheaf.domain.scopes import ALL_COLLECTIONS, Scope, check_collection_pattern

KEY_PREFIX = "sk_sheaf_"
_KEY_RE = re.compile(r"^sk_sheaf_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def key_id_of(token: str) -> str | None:
    """The id of a well-formed key, else None (nothing about a malformed one is trusted)."""
    match = _KEY_RE.fullmatch(token)
    return match["id"] if match else None


def secret_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored: StoredKey) -> bool:
    return hmac.compare_digest(secret_hash(token), stored.secret_sha256)


def new_key(name: str, scope: Scope, collections: Sequence[str]) -> tuple[str, NewApiKey]:
    """A fresh key and the record to store. The key is returned once and kept nowhere."""
    names = tuple(dict.fromkeys(check_collection_pattern(c) for c in collections))
    if not names:
        raise ValueError("a key needs at least one collection (or `*` for all)")
    if ALL_COLLECTIONS in names:
        names = (ALL_COLLECTIONS,)
    key_id = secrets.token_hex(8)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    one_line = " ".join(name.split())
    label = "".join(c for c in one_line if unicodedata.category(c)[0] != "C")[:200]
    label = label.strip() or "unnamed"
    return token, NewApiKey(key_id, label, scope, names, secret_hash(token))
