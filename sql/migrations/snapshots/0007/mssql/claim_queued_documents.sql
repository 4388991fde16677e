-- claim_queued_documents: polling (docs/lease-contract.md). Leases up to @limit ready
-- queued rows, oldest first, each under its own new token, in ONE UPDATE; @limit is the
-- caller's free processing slots, never more rows are returned.
--
-- The rows are picked and changed by the same statement: the CTE's TOP (@batch) reads
-- them under UPDLOCK (the lock an UPDATE takes, held to the end of the transaction, so a
-- second claimer cannot pick the same row between our read and our write), READPAST
-- (rows other claimers hold are skipped, not waited for, so claimers never queue behind
-- each other) and ROWLOCK (row locks only, so READPAST has single rows to skip and one
-- claim never locks a page or the table that others would then skip entirely).
-- READCOMMITTEDLOCK reads under locking READ COMMITTED even where the database has
-- READ_COMMITTED_SNAPSHOT on (the Azure SQL default): READPAST is documented for locking
-- reads only. The scan is a seek (INDEX and FORCESEEK: whatever the statistics say) on
-- ix_documents_ready (status, ready_at, created_at), whose order is the ORDER BY, and
-- which INCLUDEs every column the other predicates read (migration 0007): TOP stops after
-- @batch rows, and no row is locked that a key lookup would then reject.
-- ready_at is COALESCE(not_before, created_at), the contract's "oldest first" key, kept as
-- a persisted computed column on SQL Server only (migration 0001) so it can be indexed.
CREATE OR ALTER PROCEDURE dbo.claim_queued_documents
    @worker_id NVARCHAR(256),
    @lease_seconds FLOAT,
    @limit INT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @now DATETIMEOFFSET(6) = SYSUTCDATETIME();
    -- DATEADD takes an INT: whole seconds first, then the microseconds.
    DECLARE @lease_expires_at DATETIMEOFFSET(6) = DATEADD(
        MICROSECOND,
        CAST((@lease_seconds - FLOOR(@lease_seconds)) * 1000000 AS INT),
        DATEADD(SECOND, CAST(FLOOR(@lease_seconds) AS INT), @now)
    );
    DECLARE @batch INT = IIF(@limit > 0, @limit, 0);
    DECLARE @leased TABLE (
        document_id NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL PRIMARY KEY,
        collection NVARCHAR(128) NOT NULL,
        lease_token NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL,
        lease_expires_at DATETIMEOFFSET(6) NOT NULL,
        attempt INT NOT NULL,
        dispatch_seq INT NOT NULL,
        blob_key NVARCHAR(256) NOT NULL,
        content_type NVARCHAR(128) NOT NULL,
        not_before DATETIMEOFFSET NULL,
        created_at DATETIMEOFFSET NOT NULL
    );

    BEGIN TRANSACTION;

    WITH picked AS (
        SELECT TOP (@batch)
            d.id,
            d.collection,
            d.status,
            d.lease_token,
            d.lease_owner,
            d.lease_expires_at,
            d.attempts,
            d.started_at,
            d.current_stage,
            d.updated_at,
            d.dispatch_seq,
            d.blob_key,
            d.content_type,
            d.not_before,
            d.created_at
        FROM
            dbo.documents AS d WITH (
                UPDLOCK, READPAST, ROWLOCK, READCOMMITTEDLOCK, INDEX (ix_documents_ready), FORCESEEK
            )
        WHERE
            d.status = N'queued'
            AND d.ready_at <= @now  -- the seek range; the next line is the contract's test
            AND (d.not_before IS NULL OR d.not_before <= @now)
            AND d.lease_token IS NULL
            AND d.attempts < d.max_attempts
        ORDER BY d.ready_at, d.created_at
    )

    UPDATE picked
    SET
        status = N'processing',
        lease_token = LOWER(CAST(NEWID() AS NVARCHAR(36))),  -- a new token per row
        lease_owner = @worker_id,
        lease_expires_at = @lease_expires_at,
        attempts = attempts + 1,
        started_at = COALESCE(started_at, @now),
        current_stage = N'queued',
        updated_at = @now
    OUTPUT
        INSERTED.id,
        INSERTED.collection,
        INSERTED.lease_token,
        INSERTED.lease_expires_at,
        INSERTED.attempts,
        INSERTED.dispatch_seq,
        INSERTED.blob_key,
        INSERTED.content_type,
        INSERTED.not_before,
        INSERTED.created_at
    INTO @leased (
        document_id,
        collection,
        lease_token,
        lease_expires_at,
        attempt,
        dispatch_seq,
        blob_key,
        content_type,
        not_before,
        created_at
    );

    INSERT INTO dbo.attempts (
        document_id, number, lease_token, worker_id, started_at, outcome, stage
    )
    SELECT
        l.document_id,
        l.attempt,
        l.lease_token,
        @worker_id AS worker_id,
        @now AS started_at,
        N'running' AS outcome,
        N'queued' AS stage
    FROM @leased AS l;

    COMMIT TRANSACTION;

    SELECT
        l.document_id,
        l.collection,
        l.lease_token,
        l.lease_expires_at,
        l.attempt,
        l.dispatch_seq,
        l.blob_key,
        l.content_type
    FROM @leased AS l
    ORDER BY COALESCE(l.not_before, l.created_at), l.created_at;  -- the order they were picked in
END;
