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

from alembic import op

from sheaf.adapters.sql.snapshots import drop_procedures, install_snapshots

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

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
        install_snapshots(bind, revision, "notify_document_queued")  # snapshots/0006/postgres/
        bind.exec_driver_sql(TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP TRIGGER IF EXISTS documents_queued_notify ON documents")
        drop_procedures(bind, "notify_document_queued")
