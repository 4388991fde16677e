"""Judge a chaos run from the database alone: was anything lost or processed twice?

    python -m tests.chaos.check --dsn postgresql://postgres@127.0.0.1:5432/sheaf_chaos_x

Independent of the harness that killed the workers: it reads only `documents`,
`attempts` and `chunks`. A document's expected outcome is in its filename
(`ok--...` completes, `expect-<code>--...` fails with that code; see corpus.py).

    lost                   neither completed nor failed (still queued or processing)
    duplicate chunks       a document whose live chunks (those of the lease its completion
                           made visible) hold some ordinal more than once
    duplicate completions  a document with more than one `completed` attempt row
    incomplete chunk sets  a completed document whose live chunks are not exactly
                           ordinals 0 .. chunk_count-1
    unexpected outcomes    completed when it should fail, failed when it should complete,
                           or failed with another code than expected

With `--dead-letters FILE` (what the harness read from the Service Bus dead-letter queue
after the run: a JSON list of `{"document_id", "reason", ...}`), it also judges the DLQ:
a document that must complete may never have a message there, nor may a message name no
document of this run; those of documents that must fail are where they belong.

Exit status 0 when all of these are zero (and the retried share reaches `--min-retried`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

DOCUMENTS = """
    SELECT d.filename, d.status, d.attempts, d.error_code, d.chunk_count,
           coalesce(live.total, 0), coalesce(live.ordinals, 0), live.low, live.high,
           coalesce(done.completions, 0),
           extract(epoch FROM d.created_at)::float8, extract(epoch FROM d.updated_at)::float8
    FROM documents d
    LEFT JOIN (  -- the live chunks: those of the lease whose completion made them visible
        SELECT c.document_id, count(*) AS total, count(DISTINCT c.ordinal) AS ordinals,
               min(c.ordinal) AS low, max(c.ordinal) AS high
        FROM chunks c JOIN documents x ON x.id = c.document_id AND x.chunks_token = c.lease_token
        GROUP BY c.document_id
    ) live ON live.document_id = d.id
    LEFT JOIN (
        SELECT document_id, count(*) AS completions FROM attempts
        WHERE outcome = 'completed' GROUP BY document_id
    ) done ON done.document_id = d.id
    WHERE d.status <> 'deleted'
"""
EXPIRED = "SELECT count(DISTINCT document_id) FROM attempts WHERE outcome = 'expired'"
FILENAMES = "SELECT CAST(id AS text), filename FROM documents"


@dataclass(frozen=True)
class Row:
    """One document, as far as the verdict is concerned."""

    filename: str
    status: str
    attempts: int
    error_code: str | None
    chunk_count: int
    live_chunks: int
    live_ordinals: int
    lowest_ordinal: int | None
    highest_ordinal: int | None
    completions: int
    created: float
    updated: float


@dataclass
class DeadLetters:
    """The dead-letter queue after the run, by the documents its messages name."""

    total: int = 0
    healthy: int = 0  # of documents that must complete: never acceptable
    expected_failures: int = 0  # of documents that must fail: where they belong
    unknown: int = 0  # naming no document of this run, or unreadable
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Verdict:
    uploaded: int = 0
    completed: int = 0
    failed: dict[str, dict[str, int]] = field(default_factory=dict)  # code → expected/unexpected
    lost: int = 0
    duplicate_chunks: int = 0
    duplicate_completions: int = 0
    incomplete_chunk_sets: int = 0
    unexpected_outcomes: int = 0
    retried: int = 0  # documents with attempts >= 2
    with_expired_attempt: int = 0
    max_attempts: int = 0
    span_seconds: float = 0.0
    dead_letters: DeadLetters | None = None  # None: the run had no Service Bus
    examples: list[str] = field(default_factory=list)

    @property
    def retried_share(self) -> float:
        return self.retried / self.uploaded if self.uploaded else 0.0

    def passed(self, min_retried: float) -> bool:
        bad = (
            self.lost
            + self.duplicate_chunks
            + self.duplicate_completions
            + self.incomplete_chunk_sets
            + self.unexpected_outcomes
        )
        if self.dead_letters is not None:
            bad += self.dead_letters.healthy + self.dead_letters.unknown
        return bad == 0 and self.uploaded > 0 and self.retried_share >= min_retried


def expected_code(filename: str) -> str | None:
    """None when the document must complete, else the error code it must fail with."""
    prefix = filename.split("--", 1)[0]
    return prefix.removeprefix("expect-") if prefix.startswith("expect-") else None


def judge_dead_letters(cur: Any, letters: list[dict[str, Any]]) -> tuple[DeadLetters, list[str]]:
    """Sort the DLQ's messages by the outcome their document must reach; explain the bad."""
    cur.execute(FILENAMES)
    filenames = dict(cur.fetchall())
    found, examples = DeadLetters(total=len(letters)), []
    reasons: Counter[str] = Counter()
    for letter in letters:
        reasons[str(letter.get("reason"))] += 1
        filename = filenames.get(letter.get("document_id"))
        if filename is None:
            found.unknown += 1
            examples.append(f"dead_letters: message {letter.get('message_id')} names no document")
        elif expected_code(filename) is None:
            found.healthy += 1
            examples.append(f"dead_letters: {filename} ({letter.get('reason')})")
        else:
            found.expected_failures += 1
    found.reasons = dict(reasons.most_common())
    return found, examples


def judge(cur: Any, letters: list[dict[str, Any]] | None = None) -> Verdict:
    cur.execute(DOCUMENTS)
    rows = [Row(*row) for row in cur.fetchall()]
    cur.execute(EXPIRED)
    verdict = Verdict(uploaded=len(rows), with_expired_attempt=int(cur.fetchone()[0]))
    failed: dict[str, Counter[str]] = {}
    for row in rows:
        verdict.completed += row.status == "completed"
        verdict.retried += row.attempts >= 2
        verdict.max_attempts = max(verdict.max_attempts, row.attempts)
        if row.status == "failed":
            expected = expected_code(row.filename) == row.error_code
            failed.setdefault(row.error_code or "?", Counter())[
                "expected" if expected else "unexpected"
            ] += 1
        for counter, example in problems(row):
            setattr(verdict, counter, getattr(verdict, counter) + 1)
            if len(verdict.examples) < 20:
                verdict.examples.append(f"{counter}: {row.filename} {example}")
    verdict.failed = {code: dict(kinds) for code, kinds in sorted(failed.items())}
    if rows:
        verdict.span_seconds = max(r.updated for r in rows) - min(r.created for r in rows)
    if letters is not None:
        verdict.dead_letters, examples = judge_dead_letters(cur, letters)
        verdict.examples += examples[: max(0, 20 - len(verdict.examples))]
    return verdict


def problems(row: Row) -> list[tuple[str, str]]:
    """What is wrong with one document: (the Verdict counter to bump, an explanation)."""
    found = []
    want = expected_code(row.filename)
    if row.status not in ("completed", "failed"):
        found.append(("lost", f"is still {row.status}"))
    elif (row.status, row.error_code) != (
        ("completed", None) if want is None else ("failed", want)
    ):
        found.append(("unexpected_outcomes", f"ended {row.status} {row.error_code or ''}"))
    if row.live_chunks != row.live_ordinals:
        found.append(
            ("duplicate_chunks", f"has {row.live_chunks} live chunks, {row.live_ordinals} ordinals")
        )
    if row.completions > 1:
        found.append(("duplicate_completions", f"completed {row.completions} times"))
    whole = row.live_chunks == row.live_ordinals == row.chunk_count and (
        row.chunk_count == 0
        or (row.lowest_ordinal, row.highest_ordinal) == (0, row.chunk_count - 1)
    )
    if row.status == "completed" and not whole:
        found.append(
            ("incomplete_chunk_sets", f"has {row.live_chunks} live chunks of {row.chunk_count}")
        )
    return found


def print_table(verdict: Verdict, database: str, min_retried: float) -> None:
    rows: list[tuple[str, object]] = [
        ("documents uploaded", verdict.uploaded),
        ("completed", verdict.completed),
        ("failed", sum(sum(c.values()) for c in verdict.failed.values())),
    ]
    rows += [
        (f"  {code}", ", ".join(f"{n} {kind}" for kind, n in counts.items()))
        for code, counts in verdict.failed.items()
    ]
    rows += [
        ("lost (neither completed nor failed)", verdict.lost),
        ("duplicate live chunk ordinals", verdict.duplicate_chunks),
        ("duplicate completed attempts", verdict.duplicate_completions),
        ("incomplete chunk sets", verdict.incomplete_chunk_sets),
        ("unexpected outcomes", verdict.unexpected_outcomes),
        ("attempts >= 2", f"{verdict.retried} ({verdict.retried_share:.1%})"),
        ("with an expired (killed) attempt", verdict.with_expired_attempt),
        ("most attempts of one document", verdict.max_attempts),
        ("first upload to last settlement", f"{verdict.span_seconds:.1f} s"),
    ]
    if (letters := verdict.dead_letters) is not None:
        rows += [
            ("dead-lettered messages", letters.total),
            ("  of documents that must fail", letters.expected_failures),
            ("  of healthy documents", letters.healthy),
            ("  naming no document", letters.unknown),
        ]
        rows += [(f"  reason {reason}", n) for reason, n in letters.reasons.items()]
    print(f"Checker: database {database}")
    for label, value in rows:
        print(f"  {label:<38} {value}")
    for example in verdict.examples:
        print(f"  ! {example}")
    result = "PASS" if verdict.passed(min_retried) else "FAIL"
    print(f"  {'result':<38} {result} (requires attempts >= 2 for {min_retried:.0%})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="libpq DSN (or a postgresql+asyncpg URL)")
    parser.add_argument("--min-retried", type=float, default=0.0, help="share, e.g. 0.2")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument(
        "--dead-letters", type=Path, help="JSON list of dead-lettered messages to judge too"
    )
    args = parser.parse_args(argv)
    dsn = args.dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
    letters = json.loads(args.dead_letters.read_text()) if args.dead_letters else None
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        verdict = judge(cur, letters)
    if args.json:
        print(json.dumps({**asdict(verdict), "retried_share": verdict.retried_share}))
    else:
        print_table(verdict, dsn.rsplit("/", 1)[-1], args.min_retried)
    return 0 if verdict.passed(args.min_retried) else 1


if __name__ == "__main__":
    sys.exit(main())
