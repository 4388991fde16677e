"""The command line's human output (`sheaf.cli_views`), from API bodies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sheaf import cli_views as views

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.000123456789012345, "0 ms"),
        (0.3404, "340 ms"),
        (1.8234567891234567, "1.82 s"),
        (185.2, "3 min 5 s"),
        (7800, "2 h 10 min"),
        (100_000, "1 d 3 h"),
    ],
)
def test_durations_read_at_a_glance(seconds: float | None, shown: str) -> None:
    assert views.duration(seconds) == shown


def test_a_table_aligns_its_columns_and_right_aligns_numbers() -> None:
    text = views.table(["NAME", "N"], [("a", 5), ("longer", 12)], numeric={1})
    assert text.splitlines() == [
        "NAME     N",
        "------  --",
        "a        5",
        "longer  12",
    ]


def test_stats_are_a_table_with_the_oldest_age_in_words() -> None:
    body = {
        "counts": {"queued": 2, "processing": 1, "completed": 40, "failed": 3, "deleted": 0},
        "oldest_ready_age_seconds": 75.4,
        "leases_held": 1,
    }
    assert views.stats(body).splitlines() == [
        "STATUS      DOCUMENTS",
        "----------  ---------",
        "queued              2",
        "processing          1",
        "completed          40",
        "failed              3",
        "deleted             0",
        "",
        "Oldest ready document waiting: 1 min 15 s",
        "Documents being processed now: 1",
    ]


DOCUMENT = {
    "id": "d1",
    "collection": "audit",
    "filename": "locked.pdf",
    "status": "failed",
    "attempts": 2,
    "max_attempts": 3,
    "current_stage": "extract",
    "last_error": "The PDF is password-protected.",
    "error_code": "encrypted",
    "page_count": None,
    "chunk_count": 0,
    "content_type": "application/pdf",
    "size_bytes": 12345,
    "created_at": "2026-12-06T14:01:52.123456Z",
    "completed_at": None,
    "not_before": None,
    "history": [
        {
            "number": 1,
            "outcome": "transient",
            "worker": "host-1",
            "started_at": "2026-12-06T14:01:53Z",
            "stage_seconds": {},
            "error_code": "embedding_throttled",
        },
        {
            "number": 2,
            "outcome": "permanent",
            "worker": "host-2",
            "started_at": "2026-12-06T14:02:00Z",
            "stage_seconds": {"download": 0.0012345678901234, "extract": 1.8234567891234567},
            "error_code": "encrypted",
        },
    ],
}


def test_a_document_shows_its_facts_and_attempts_with_readable_durations() -> None:
    text = views.document(DOCUMENT)
    assert "Error            encrypted: The PDF is password-protected." in text
    assert "Failed in stage  extract" in text
    assert "Size             12,345 bytes" in text
    assert "Uploaded         2026-12-06 14:01:52 UTC" in text
    assert "Completed" not in text  # nothing to say: left out
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "OUTCOME", "WORKER", "STARTED", "DOWNLOAD", "EXTRACT", "ERROR"]
    assert lines[-1].split() == [
        "2", "permanent", "host-2", "2026-12-06", "14:02:00", "UTC", "1", "ms", "1.82", "s",
        "encrypted",
    ]  # fmt: skip
    assert "1823456" not in text  # no 18-digit seconds


def test_failed_documents_and_dead_letters_are_tables() -> None:
    page = {"documents": [DOCUMENT], "next_cursor": "d1"}
    lines = views.failed(page).splitlines()
    assert lines[0].split() == ["DOCUMENT", "COLLECTION", "FILE", "ERROR", "MESSAGE"]
    assert lines[2].split()[:4] == ["d1", "audit", "locked.pdf", "encrypted"]
    assert lines[-1] == "… more: raise --limit"
    assert views.failed({"documents": [], "next_cursor": None}) == "no failed documents"

    message = {
        "sequence_number": 7,
        "reason": "encrypted",
        "delivery_count": 1,
        "enqueued_at": "2026-12-06T14:00:00Z",
        "document_id": "d1",
        "collection": "audit",
        "filename": "locked.pdf",
        "document_status": "failed",
        "description": "Fix the cause, then re-drive.",
        "problem": None,
    }
    now = datetime(2026, 12, 6, 14, 3, 5, tzinfo=UTC)
    body = {"messages": [message], "more": False, "limit": 50}
    lines = views.dead_letters(body, now).splitlines()
    assert lines[0].split() == ["MESSAGE", "REASON", "DELIVERIES", "AGE", "DOCUMENT", "DESCRIPTION"]
    assert lines[2] == (
        "#7       encrypted           1  3 min 5 s  d1 audit/locked.pdf [failed]  "
        "Fix the cause, then re-drive."
    )
    assert views.dead_letters({"messages": [], "more": False, "limit": 50}) == (
        "the dead-letter queue is empty"
    )
