"""PostgreSQL: a trigger that NOTIFYs listening workers when a document becomes ready.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

A polling worker found a new document only at its next poll (`SHEAF_POLL_INTERVAL_SECONDS`,
1 s with jitter): docs/benchmarks.md measured that wait as the first-lease delay of a
burst. On PostgreSQL the trigger `documents_queued_notify` sends `NOTIFY sheaf_queued` when
a row is inserted or set queued and is ready now, and polling workers LISTEN on that
channel (`PostgresDocumentStore.watch_queue`) and claim at once. Polling stays: the
notification only shortens the wait. SQLite has no notifications; SQL Server deployments
wake workers through Service Bus.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PROCEDURES = Path(__file__).resolve().parents[2] / "procedures"
TRIGGER = """
CREATE TRIGGER documents_queued_notify
AFTER INSERT OR UPDATE OF status ON documents
FOR EACH ROW
WHEN (NEW.status = 'queued' AND (NEW.not_before IS NULL OR NEW.not_before <= NEW.updated_at))
EXECUTE FUNCTION notify_document_queued()
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        sql = (PROCEDURES / "postgres" / "notify_document_queued.sql").read_text("utf-8")
        bind.exec_driver_sql(sql)
        bind.exec_driver_sql(TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP TRIGGER IF EXISTS documents_queued_notify ON documents")
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS notify_document_queued")
