"""Blob keys: server-generated, and checked so no key can escape its store's root.

Every BlobStore adapter validates keys with `validate_blob_key`; services make new ones
with `new_blob_key`. A user's filename never becomes part of a key.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
_MAX_KEY_LENGTH = 1024


def new_blob_key(now: datetime) -> str:
    """A fresh key `YYYY/MM/DD/<uuid4 hex>` for the UTC date of `now`.

    Never derived from a user's filename, so it cannot carry traversal tricks or collide;
    the date prefix keeps directories small and lets an operator find a day's uploads.
    """
    if now.tzinfo is None:
        raise ValueError("new_blob_key needs an aware datetime")
    return f"{now.astimezone(UTC):%Y/%m/%d}/{uuid.uuid4().hex}"


def validate_blob_key(key: str) -> str:
    """Return `key` if it is a safe relative key; raise `ValueError` saying why not.

    Only `[A-Za-z0-9._/-]`, not absolute, no empty, `.` or `..` segments — the rules that
    make `root/<key>` stay inside `root` on every filesystem and in every blob service.
    """
    if not key or len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"blob key must be 1 to {_MAX_KEY_LENGTH} characters long")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"blob key {key!r} contains a NUL or a backslash")
    if not _KEY_CHARACTERS.fullmatch(key):
        raise ValueError(f"blob key {key!r} has characters outside [A-Za-z0-9._/-]")
    if key.startswith("/"):
        raise ValueError(f"blob key {key!r} is an absolute path")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise ValueError(f"blob key {key!r} has an empty, '.' or '..' segment")
    return key
