"""What the `sheaf` command line prints for people: aligned tables and readable durations.

Each function takes the API's JSON body (the same one `--json` prints unchanged) and
returns text, so the human form can never hold anything the machine form lacks, and the
functions are tested without a server.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

STATUS_ORDER = ("queued", "processing", "completed", "failed", "deleted")
STAGE_ORDER = ("download", "extract", "chunk", "embed", "index", "total")
MISSING = "-"


def duration(seconds: float | None) -> str:
    """`340 ms`, `1.82 s`, `3 min 5 s`, `2 h 10 min`, `1 d 4 h`."""
    if seconds is None:
        return MISSING
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def moment(iso: str | None) -> str:
    """An API time (UTC) as `2026-12-06 14:01:52 UTC`."""
    if not iso:
        return MISSING
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def age(iso: str | None, now: datetime | None = None) -> str:
    if not iso:
        return MISSING
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return duration(max(0.0, ((now or datetime.now(UTC)) - when).total_seconds()))


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Collection[int] = ()
) -> str:
    """Columns padded to their widest cell; `numeric` columns right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def stats(body: dict[str, Any]) -> str:
    counts: dict[str, int] = body["counts"]
    order = [*STATUS_ORDER, *sorted(set(counts) - set(STATUS_ORDER))]
    rows = [(status, counts.get(status, 0)) for status in order]
    oldest = body["oldest_ready_age_seconds"]
    return "\n".join(
        [
            table(["STATUS", "DOCUMENTS"], rows, numeric={1}),
            "",
            f"Oldest ready document waiting: {'none' if oldest is None else duration(oldest)}",
            f"Documents being processed now: {body['leases_held']}",
        ]
    )


def document(body: dict[str, Any]) -> str:
    status = body["status"]
    if status == "processing" and body["current_stage"]:
        status = f"processing ({body['current_stage']})"
    facts = [
        ("Document", body["id"]),
        ("File", f"{body['collection']}/{body['filename']}"),
        ("Status", status),
        ("Error", f"{body['error_code']}: {body['last_error']}" if body["error_code"] else None),
        ("Failed in stage", body["current_stage"] if body["status"] == "failed" else None),
        ("Pages", body["page_count"]),
        ("Chunks", body["chunk_count"]),
        ("Attempts", f"{body['attempts']} of {body['max_attempts']}"),
        ("Type", body["content_type"]),
        ("Size", f"{body['size_bytes']:,} bytes"),
        ("Uploaded", moment(body["created_at"])),
        ("Completed", moment(body["completed_at"]) if body["completed_at"] else None),
        ("Next try", moment(body["not_before"]) if body["not_before"] else None),
    ]
    width = max(len(name) for name, _ in facts)
    lines = [f"{name:<{width}}  {value}" for name, value in facts if value is not None]
    history = body.get("history") or []
    if history:
        lines += ["", attempts(history)]
    return "\n".join(lines)


def attempts(history: list[dict[str, Any]]) -> str:
    seen = {stage for a in history for stage in a["stage_seconds"]}
    stages = [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))
    headers = ["#", "OUTCOME", "WORKER", "STARTED", *(s.upper() for s in stages), "ERROR"]
    rows = [
        [
            a["number"],
            a["outcome"],
            a["worker"],
            moment(a["started_at"]),
            *(duration(a["stage_seconds"].get(s)) for s in stages),
            a["error_code"] or MISSING,
        ]
        for a in history
    ]
    return table(headers, rows, numeric={0, *range(4, 4 + len(stages))})


def failed(body: dict[str, Any]) -> str:
    documents = body["documents"]
    if not documents:
        return "no failed documents"
    rows = [
        (
            d["id"],
            d["collection"],
            d["filename"],
            d["error_code"] or MISSING,
            _short(d["last_error"]),
        )
        for d in documents
    ]
    text = table(["DOCUMENT", "COLLECTION", "FILE", "ERROR", "MESSAGE"], rows)
    if body["next_cursor"]:
        text += "\n… more: raise --limit"
    return text


def dead_letters(body: dict[str, Any], now: datetime | None = None) -> str:
    messages = body["messages"]
    if not messages:
        return "the dead-letter queue is empty"
    rows = [
        (
            f"#{m['sequence_number']}",
            m["reason"] or MISSING,
            m["delivery_count"],
            age(m["enqueued_at"], now),
            _where(m),
            _short(m["description"] or m["problem"] or ""),
        )
        for m in messages
    ]
    headers = ["MESSAGE", "REASON", "DELIVERIES", "AGE", "DOCUMENT", "DESCRIPTION"]
    text = table(headers, rows, numeric={2})
    if body["more"]:
        text += f"\n… more than {body['limit']}; raise --limit or filter with --reason"
    return text


def _where(message: dict[str, Any]) -> str:
    if not message["document_id"]:
        return "malformed"
    state = message["document_status"] or "no such document"
    return (
        f"{message['document_id']} {message['collection']}/{message['filename'] or '?'} [{state}]"
    )


def _short(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
