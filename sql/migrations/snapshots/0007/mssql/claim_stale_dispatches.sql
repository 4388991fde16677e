-- claim_stale_dispatches: the reconciler (docs/lease-contract.md). Ready queued rows whose
-- last wake-up message is older than @older_than seconds get dispatch_seq + 1 and
-- last_dispatched_at = now in ONE UPDATE, and are returned for a fresh message.
--
-- UPDLOCK holds each picked row until the statement commits, READPAST skips rows another
-- reconciler (or a claimer) holds, ROWLOCK keeps those locks to single rows; and a row
-- just bumped is no longer stale. So any number of reconcilers never return one row
-- twice and cannot storm the bus. READCOMMITTEDLOCK keeps the read a locking one under
-- READ_COMMITTED_SNAPSHOT (READPAST needs it). The scan is a forced seek on
-- ix_documents_status_last_dispatched (status, last_dispatched_at; the clustered key id
-- follows), whose order is the ORDER BY and which INCLUDEs not_before and lease_token
-- (migration 0007). Rows that are queued hold no lease: the lease_token IS NULL test
-- states it. The OUTPUT goes INTO a table variable: a bare OUTPUT fails (error 334) once
-- the table has a trigger.
CREATE OR ALTER PROCEDURE dbo.claim_stale_dispatches
    @older_than FLOAT,
    @limit INT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @now DATETIMEOFFSET(6) = SYSUTCDATETIME();
    -- DATEADD takes an INT: whole seconds first, then the microseconds.
    DECLARE @stale_before DATETIMEOFFSET(6) = DATEADD(
        MICROSECOND,
        -CAST((@older_than - FLOOR(@older_than)) * 1000000 AS INT),
        DATEADD(SECOND, -CAST(FLOOR(@older_than) AS INT), @now)
    );
    DECLARE @batch INT = IIF(@limit > 0, @limit, 0);
    DECLARE @bumped TABLE (
        document_id NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
        collection NVARCHAR(128) NOT NULL,
        dispatch_seq INT NOT NULL,
        status NVARCHAR(16) NOT NULL,
        not_before DATETIMEOFFSET NULL
    );

    WITH picked AS (
        SELECT TOP (@batch)
            d.id,
            d.collection,
            d.status,
            d.not_before,
            d.dispatch_seq,
            d.last_dispatched_at,
            d.updated_at
        FROM
            dbo.documents AS d WITH (
                UPDLOCK,
                READPAST,
                ROWLOCK,
                READCOMMITTEDLOCK,
                INDEX (ix_documents_status_last_dispatched),
                FORCESEEK
            )
        WHERE
            d.status = N'queued'
            AND (d.last_dispatched_at IS NULL OR d.last_dispatched_at <= @stale_before)
            AND (d.not_before IS NULL OR d.not_before <= @now)
            AND d.lease_token IS NULL
        ORDER BY d.last_dispatched_at, d.id
    )

    UPDATE picked
    SET
        dispatch_seq = dispatch_seq + 1,
        last_dispatched_at = @now,
        updated_at = @now
    OUTPUT
        INSERTED.id,
        INSERTED.collection,
        INSERTED.dispatch_seq,
        INSERTED.status,
        INSERTED.not_before
    INTO @bumped (document_id, collection, dispatch_seq, status, not_before);

    SELECT
        b.document_id,
        b.collection,
        b.dispatch_seq,
        b.status,
        b.not_before
    FROM @bumped AS b;
END;
