-- acquire_document_lease: lease one document by id, or say why not (docs/lease-contract.md).
--
-- A worker holding a message for this very document waits up to two seconds for the row
-- lock (SET LOCK_TIMEOUT, scoped to this procedure) instead of skipping the row as the
-- claimers do with READPAST: skipping would answer 'held' for a row that is only being
-- renewed or released for a moment, and the message would be settled for nothing. When the
-- lock outlasts the wait (error 1222) the answer is 'held'.
--
-- The caller runs this on an autocommit connection, so the procedure owns its transaction
-- and its CATCH block may roll it back. Tokens are UNIQUEIDENTIFIER values from NEWID(),
-- kept in their 36-character text form (the token columns are strings on every backend).
-- Identifier parameters are one character wider than their columns: T-SQL silently
-- truncates an over-long argument, and a 37-character value can equal no stored id.
CREATE OR ALTER PROCEDURE dbo.acquire_document_lease
    @document_id NVARCHAR(37),
    @worker_id NVARCHAR(256),
    @lease_seconds FLOAT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET LOCK_TIMEOUT 2000;

    DECLARE
        @now DATETIMEOFFSET(6),
        @found BIT = 0,
        @outcome NVARCHAR(16),
        @status NVARCHAR(16),
        @attempts INT,
        @max_attempts INT,
        @dispatch_seq INT,
        @not_before DATETIMEOFFSET(6),
        @lease_expires_at DATETIMEOFFSET(6),
        @old_token NVARCHAR(36),
        @lease_owner NVARCHAR(256),
        @current_stage NVARCHAR(32),
        @collection NVARCHAR(128),
        @blob_key NVARCHAR(256),
        @content_type NVARCHAR(128),
        @message NVARCHAR(MAX),
        @lease_token NVARCHAR(36) = LOWER(CAST(NEWID() AS NVARCHAR(36)));

    BEGIN TRY
        BEGIN TRANSACTION;

        SELECT
            @found = 1,
            @status = d.status,
            @attempts = d.attempts,
            @max_attempts = d.max_attempts,
            @dispatch_seq = d.dispatch_seq,
            @not_before = d.not_before,
            @lease_expires_at = d.lease_expires_at,
            @old_token = d.lease_token,
            @lease_owner = d.lease_owner,
            @current_stage = d.current_stage,
            @collection = d.collection,
            @blob_key = d.blob_key,
            @content_type = d.content_type
        FROM dbo.documents AS d WITH (UPDLOCK, ROWLOCK)
        WHERE d.id = @document_id;

        SET @now = SYSUTCDATETIME();  -- read after the lock wait, never before

        SET @outcome = CASE
            WHEN @found = 0 THEN N'missing'
            WHEN @status IN (N'completed', N'failed', N'deleted') THEN N'terminal'
            WHEN @status = N'queued' AND @not_before > @now THEN N'not_ready'
            WHEN
                (@status = N'queued' OR @lease_expires_at <= @now)
                AND @attempts < @max_attempts
                THEN N'acquired'
            ELSE N'held'
        END;

        IF @outcome = N'acquired'
            BEGIN
                IF @status = N'processing'  -- taking over a lease that expired
                    BEGIN
                        SET @message = CONCAT(
                            N'worker ', @lease_owner,
                            N' stopped renewing its lease during stage ',
                            COALESCE(@current_stage, N'unknown'),
                            N' (attempt ', @attempts, N' of ', @max_attempts, N')'
                        );
                        UPDATE dbo.attempts
                        SET
                            outcome = N'expired',
                            ended_at = @now,
                            error_code = N'lease_expired',
                            error = @message
                        WHERE lease_token = @old_token AND outcome = N'running';
                        -- At most 1,000 rows per DELETE: no escalation to a table lock.
                        WHILE 1 = 1
                            BEGIN
                                DELETE TOP (1000) FROM dbo.chunks
                                WHERE document_id = @document_id AND lease_token = @old_token;
                                IF @@ROWCOUNT < 1000 BREAK;
                            END;
                    END;

                -- DATEADD takes an INT: whole seconds first, then the microseconds.
                SET @lease_expires_at = DATEADD(
                    MICROSECOND,
                    CAST((@lease_seconds - FLOOR(@lease_seconds)) * 1000000 AS INT),
                    DATEADD(SECOND, CAST(FLOOR(@lease_seconds) AS INT), @now)
                );
                SET @attempts = @attempts + 1;
                SET @status = N'processing';

                -- Compare-and-set on the token read above (NULL for a queued row).
                UPDATE dbo.documents
                SET
                    status = N'processing',
                    lease_token = @lease_token,
                    lease_owner = @worker_id,
                    lease_expires_at = @lease_expires_at,
                    attempts = @attempts,
                    started_at = COALESCE(started_at, @now),
                    current_stage = N'queued',
                    updated_at = @now
                WHERE
                    id = @document_id
                    AND (
                        lease_token = @old_token
                        OR (lease_token IS NULL AND @old_token IS NULL)
                    );

                INSERT INTO dbo.attempts (
                    document_id, number, lease_token, worker_id, started_at, outcome, stage
                )
                VALUES (
                    @document_id, @attempts, @lease_token, @worker_id, @now, N'running',
                    N'queued'
                );
            END;

        COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
        IF ERROR_NUMBER() <> 1222 THROW;
        -- The row stayed locked for the whole wait: another session is changing it. 'held'
        -- only tells the caller to let its message go, so the status and dispatch_seq that
        -- come with it are read without waiting again (NOLOCK: possibly that session's
        -- uncommitted values, which is as good an answer here).
        SET @outcome = N'held';
        SELECT
            @status = d.status,
            @dispatch_seq = d.dispatch_seq
        FROM dbo.documents AS d WITH (NOLOCK)
        WHERE d.id = @document_id;
    END CATCH;

    SELECT
        @outcome AS outcome,
        @status AS status,
        @dispatch_seq AS dispatch_seq,
        @collection AS collection,
        @blob_key AS blob_key,
        @content_type AS content_type,
        IIF(@outcome = N'not_ready', @not_before, NULL) AS not_before,
        IIF(@outcome = N'acquired', @lease_token, NULL) AS lease_token,
        IIF(@outcome = N'acquired', @lease_expires_at, NULL) AS lease_expires_at,
        IIF(@outcome = N'acquired', @attempts, NULL) AS attempt;
END;
