"""API keys, scopes, the role mapping and the upload rate limit: pure code."""

from __future__ import annotations

import re

import pytest

from sheaf.auth.keys import (
    KEY_PREFIX,
    is_api_key,
    key_id_of,
    matches,
    new_key,
    secret_hash,
)
from sheaf.auth.ratelimit import TokenBucketLimiter
from sheaf.domain.keys import StoredKey
from sheaf.domain.scopes import (
    ALL_COLLECTIONS,
    ANONYMOUS,
    Grant,
    Principal,
    Scope,
    grants,
    parse_role_scopes,
)
from sheaf.testing import InMemoryKeyStore

pytestmark = pytest.mark.unit


def test_a_new_key_is_recognisable_random_and_stored_only_as_its_hash() -> None:
    token, record = new_key("ingest bot", Scope.WRITE, ["legal", "hr"])
    assert re.fullmatch(r"sk_sheaf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token)
    assert is_api_key(token)
    assert key_id_of(token) == record.id
    assert record.secret_sha256 == secret_hash(token) != token
    assert token not in repr(record)
    assert record.collections == ("legal", "hr")
    other, _ = new_key("ingest bot", Scope.WRITE, ["legal"])
    assert other[len(KEY_PREFIX) :] != token[len(KEY_PREFIX) :]


@pytest.mark.parametrize(
    "token",
    [
        "sk_sheaf_",
        "sk_sheaf_0123456789abcdef",
        "sk_sheaf_0123456789ABCDEF_" + "a" * 43,  # ids are lower-case hex
        "sk_sheaf_0123456789abcdef_" + "a" * 42,
        "sk_sheaf_0123456789abcdef_" + "a" * 42 + "!",
        "sk_sheaf_0123456789abcdef_" + "a" * 43 + "\n",
    ],
)
def test_malformed_keys_have_no_id(token: str) -> None:
    assert key_id_of(token) is None


async def test_only_the_exact_key_matches_its_hash() -> None:
    store = InMemoryKeyStore()
    token, record = new_key("k", Scope.READ, ["a"])
    await store.create_key(record)
    stored = await store.find_key(record.id)
    assert stored is not None
    assert matches(token, stored)
    assert not matches(token[:-1] + ("A" if token[-1] != "A" else "B"), stored)
    assert not matches(token, StoredKey(stored.key, secret_hash("something else")))


def test_a_key_name_is_one_printable_line() -> None:
    _, record = new_key("  ingest\tbot\n\x1b[31mred\x00 " + "x" * 300, Scope.READ, ["a"])
    assert record.name.startswith("ingest bot [31mred ")
    assert len(record.name) == 200
    assert new_key("\n", Scope.READ, ["a"])[1].name == "unnamed"


def test_a_star_key_covers_every_collection() -> None:
    _, record = new_key("k", Scope.ADMIN, ["a", "*", "a"])
    assert record.collections == (ALL_COLLECTIONS,)
    with pytest.raises(ValueError, match="at least one collection"):
        new_key("k", Scope.READ, [])
    with pytest.raises(ValueError, match="invalid collection"):
        new_key("k", Scope.READ, ["../etc"])


def test_scopes_include_the_ones_below() -> None:
    writer = Principal("w", grants(Scope.WRITE, ["a"]))
    assert writer.allows(Scope.READ, "a")
    assert writer.allows(Scope.WRITE, "a")
    assert not writer.allows(Scope.ADMIN, "a")
    assert not writer.allows(Scope.READ, "b")
    assert writer.sees("a")
    assert not writer.sees("b")
    assert not writer.allows(Scope.READ, ALL_COLLECTIONS)
    assert ANONYMOUS.allows(Scope.ADMIN, "anything")


def test_role_mapping_reads_scopes_and_collections() -> None:
    mapping = parse_role_scopes(
        " Sheaf.Admin = admin ; Legal.Readers=read:legal,legal-archive;"
        "Legal.Readers=write:legal-inbox;0f1e2d3c-0000-4000-8000-000000000000=write:*"
    )
    assert mapping["Sheaf.Admin"] == {Grant(Scope.ADMIN, "*")}
    assert mapping["Legal.Readers"] == {
        Grant(Scope.READ, "legal"),
        Grant(Scope.READ, "legal-archive"),
        Grant(Scope.WRITE, "legal-inbox"),
    }
    assert mapping["0f1e2d3c-0000-4000-8000-000000000000"] == {Grant(Scope.WRITE, "*")}
    assert parse_role_scopes("") == {}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("Sheaf.Read", "ROLE=SCOPE"),
        ("Sheaf.Read=owner", "unknown scope"),
        ("Sheaf.Read=read:no spaces", "invalid collection"),
    ],
)
def test_role_mapping_errors_name_the_entry(raw: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_role_scopes(raw)


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0  # buckets are per caller
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") > 0
    now[0] += 100
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at the burst
    assert limiter.take("k") > 0


def test_a_zero_rate_never_limits() -> None:
    limiter = TokenBucketLimiter(rate=0, burst=1)
    assert all(limiter.take("k") == 0.0 for _ in range(100))


def test_idle_buckets_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    from sheaf.auth import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 10)
    now = [0.0]
    limiter = TokenBucketLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    for n in range(10):
        limiter.take(f"k{n}")
    now[0] += 10
    limiter.take("new")
    assert len(limiter._buckets) == 1
