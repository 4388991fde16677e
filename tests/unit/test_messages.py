from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sheaf.domain.messages import MalformedMessage, decode, encode, message_id, when
from sheaf.domain.models import Dispatch

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_round_trip() -> None:
    dispatch = Dispatch("d1", "audit", 3)
    assert decode(encode(dispatch)) == Dispatch("d1", "audit", 3)
    assert decode(encode(dispatch).encode()) == Dispatch("d1", "audit", 3)


def test_message_ids_follow_dispatch_seq() -> None:
    assert message_id(Dispatch("d1", "c", 1)) == "d1:1"
    assert message_id(Dispatch("d1", "c", 2)) == "d1:2"
    later = Dispatch("d1", "c", 2, not_before=NOW)
    assert message_id(later) != message_id(Dispatch("d1", "c", 2))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf8", "not JSON"),
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"document_id": "d"}', "lacks collection, dispatch_seq"),
        ('{"document_id": "d", "collection": "c", "dispatch_seq": 1, "x": 1}', "unknown fields x"),
        ('{"document_id": 1, "collection": "c", "dispatch_seq": 1}', "must be strings"),
        ('{"document_id": "d", "collection": "c", "dispatch_seq": 0}', "positive integer"),
        ('{"document_id": "d", "collection": "c", "dispatch_seq": true}', "positive integer"),
    ],
)
def test_poison_bodies_say_what_is_wrong(body: bytes | str, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        decode(body)
    assert info.value.code == "malformed_message"


def test_only_future_dispatches_are_scheduled() -> None:
    assert when(Dispatch("d", "c", 1), NOW) is None
    assert when(Dispatch("d", "c", 1, not_before=NOW - timedelta(seconds=1)), NOW) is None
    future = NOW + timedelta(seconds=30)
    assert when(Dispatch("d", "c", 1, not_before=future), NOW) == future
