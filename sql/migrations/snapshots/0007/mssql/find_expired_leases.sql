-- find_expired_leases: crash recovery (docs/lease-contract.md). Rows whose lease expired go
-- back to 'queued' with a bumped dispatch_seq, or to 'failed' when no attempt is left, in
-- ONE UPDATE; their attempt rows become 'expired' and the chunks staged under the dead
-- token go. Returns the moved rows so the caller can re-send their messages.
--
-- Every process runs this sweep. UPDLOCK holds each picked row to the end of the
-- transaction, READPAST skips rows another sweeper (or a worker renewing, releasing or
-- taking over) holds instead of waiting, ROWLOCK keeps the locks to single rows: so
-- concurrent sweeps never move one row twice and never block each other; READCOMMITTEDLOCK
-- keeps the read a locking one under READ_COMMITTED_SNAPSHOT (READPAST needs it). The scan
-- is a forced seek on ix_documents_status_lease_expires in the ORDER BY's order, which
-- INCLUDEs lease_token, attempts and max_attempts (migration 0007). The dead tokens'
-- chunks go at most 1,000 rows per DELETE: one statement never takes the 5,000 locks at
-- which SQL Server would escalate to a lock on the whole chunks table. The SET expressions
-- see the row as it was before the UPDATE, so the message names the worker and the stage
-- it died in even though the same statement clears them.
CREATE OR ALTER PROCEDURE dbo.find_expired_leases
    @limit INT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @now DATETIMEOFFSET(6) = SYSUTCDATETIME();
    DECLARE @batch INT = IIF(@limit > 0, @limit, 0);
    DECLARE @moved TABLE (
        document_id NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
        collection NVARCHAR(128) NOT NULL,
        dispatch_seq INT NOT NULL,
        status NVARCHAR(16) NOT NULL,
        not_before DATETIMEOFFSET NULL,
        dead_token NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL,
        last_error NVARCHAR(MAX) NOT NULL
    );

    BEGIN TRANSACTION;

    WITH picked AS (
        SELECT TOP (@batch)
            d.id,
            d.collection,
            d.status,
            d.attempts,
            d.max_attempts,
            d.dispatch_seq,
            d.last_dispatched_at,
            d.not_before,
            d.error_code,
            d.error_kind,
            d.last_error,
            d.lease_owner,
            d.lease_token,
            d.lease_expires_at,
            d.current_stage,
            d.updated_at
        FROM
            dbo.documents AS d WITH (
                UPDLOCK,
                READPAST,
                ROWLOCK,
                READCOMMITTEDLOCK,
                INDEX (ix_documents_status_lease_expires),
                FORCESEEK
            )
        WHERE
            d.status = N'processing'
            AND d.lease_expires_at <= @now
            AND d.lease_token IS NOT NULL
        ORDER BY d.lease_expires_at
    )

    UPDATE picked
    SET
        status = IIF(attempts < max_attempts, N'queued', N'failed'),
        dispatch_seq = dispatch_seq + IIF(attempts < max_attempts, 1, 0),
        last_dispatched_at = IIF(attempts < max_attempts, @now, last_dispatched_at),
        not_before = NULL,
        error_code = N'lease_expired',
        error_kind = IIF(attempts < max_attempts, N'transient', N'permanent'),
        last_error = CONCAT(
            N'worker ', lease_owner,
            N' stopped renewing its lease during stage ', COALESCE(current_stage, N'unknown'),
            N' (attempt ', attempts, N' of ', max_attempts, N')'
        ),
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = @now
    OUTPUT
        INSERTED.id,
        INSERTED.collection,
        INSERTED.dispatch_seq,
        INSERTED.status,
        INSERTED.not_before,
        DELETED.lease_token,
        INSERTED.last_error
    INTO @moved (
        document_id, collection, dispatch_seq, status, not_before, dead_token, last_error
    );

    UPDATE a
    SET
        outcome = N'expired',
        ended_at = @now,
        error_code = N'lease_expired',
        error = m.last_error
    FROM dbo.attempts AS a
    INNER JOIN @moved AS m ON a.lease_token = m.dead_token
    WHERE a.outcome = N'running';

    WHILE 1 = 1
        BEGIN
            DELETE TOP (1000) c
            FROM dbo.chunks AS c
            INNER JOIN @moved AS m
                ON c.document_id = m.document_id AND c.lease_token = m.dead_token;
            IF @@ROWCOUNT < 1000 BREAK;
        END;

    COMMIT TRANSACTION;

    SELECT
        m.document_id,
        m.collection,
        m.dispatch_seq,
        m.status,
        m.not_before
    FROM @moved AS m;
END;
