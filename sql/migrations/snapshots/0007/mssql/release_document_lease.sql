-- release_document_lease: the worker gives its lease back with an outcome
-- (docs/lease-contract.md).
--
-- success: the completion (chunks of other tokens swapped out, chunk_count from this
-- token's chunks); transient with attempts left: queued again after @retry_delay seconds
-- as a new dispatch; transient on the last attempt, or permanent: failed; interrupted:
-- queued again without spending the attempt. A stale token changes nothing and returns
-- applied = 0 with the row's current status.
--
-- The row is locked by id first (UPDLOCK: it is about to be written), then the token is
-- compared; every write below compares it again, so nothing here can change a row whose
-- lease moved on. Identifier parameters are one character wider than their columns: T-SQL
-- silently truncates an over-long argument, and a 37-character value can equal no token.
CREATE OR ALTER PROCEDURE dbo.release_document_lease
    @document_id NVARCHAR(37),
    @lease_token NVARCHAR(37),
    @outcome NVARCHAR(16),
    @error_code NVARCHAR(64),
    @error NVARCHAR(MAX),
    @retry_delay FLOAT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    IF @outcome NOT IN (N'success', N'transient', N'permanent', N'interrupted')
        THROW 50001, N'unknown release outcome', 1;

    DECLARE
        @now DATETIMEOFFSET(6),
        @applied BIT = 0,
        @status NVARCHAR(16),
        @current_token NVARCHAR(36),
        @attempts INT,
        @max_attempts INT,
        @not_before DATETIMEOFFSET(6),
        @dispatch_seq INT;

    BEGIN TRANSACTION;

    SELECT
        @status = d.status,
        @current_token = d.lease_token,
        @attempts = d.attempts,
        @max_attempts = d.max_attempts,
        @not_before = d.not_before,
        @dispatch_seq = d.dispatch_seq
    FROM dbo.documents AS d WITH (UPDLOCK, ROWLOCK)
    WHERE d.id = @document_id;

    SET @now = SYSUTCDATETIME();  -- read after the lock wait, never before

    -- Variables compare under the database's (case-insensitive) collation: compare the
    -- token as its column does since migration 0007, exactly.
    IF @status = N'processing' AND @current_token = @lease_token COLLATE Latin1_General_100_BIN2
        BEGIN
            SET @applied = 1;
            -- Success keeps this attempt's chunks and drops every other attempt's; any
            -- other outcome drops this attempt's. At most 1,000 rows per DELETE: one
            -- statement never takes the 5,000 locks at which SQL Server escalates to a
            -- lock on the whole chunks table (stalling every writer and search).
            WHILE @outcome = N'success'
                BEGIN
                    DELETE TOP (1000) FROM dbo.chunks
                    WHERE document_id = @document_id AND lease_token <> @lease_token;
                    IF @@ROWCOUNT < 1000 BREAK;
                END;
            WHILE @outcome <> N'success'
                BEGIN
                    DELETE TOP (1000) FROM dbo.chunks
                    WHERE document_id = @document_id AND lease_token = @lease_token;
                    IF @@ROWCOUNT < 1000 BREAK;
                END;
            IF @outcome = N'success'
                BEGIN
                    UPDATE dbo.documents
                    SET
                        status = N'completed',
                        completed_at = @now,
                        updated_at = @now,
                        chunk_count = (
                            SELECT COUNT(*) FROM dbo.chunks AS c
                            WHERE c.document_id = @document_id
                        ),
                        chunks_token = @lease_token,
                        current_stage = NULL,
                        last_error = NULL,
                        error_code = NULL,
                        error_kind = NULL,
                        lease_owner = NULL,
                        lease_token = NULL,
                        lease_expires_at = NULL
                    WHERE id = @document_id AND lease_token = @lease_token;
                END
            ELSE IF @outcome = N'interrupted'  -- not the document's fault: the attempt is free
                BEGIN
                    UPDATE dbo.documents
                    SET
                        status = N'queued',
                        attempts = attempts - 1,
                        not_before = NULL,
                        updated_at = @now,
                        lease_owner = NULL,
                        lease_token = NULL,
                        lease_expires_at = NULL
                    WHERE id = @document_id AND lease_token = @lease_token;
                END
            ELSE IF @outcome = N'transient' AND @attempts < @max_attempts
                BEGIN
                    UPDATE dbo.documents
                    SET
                        status = N'queued',
                        -- DATEADD takes an INT: whole seconds first, then the microseconds.
                        not_before = DATEADD(
                            MICROSECOND,
                            CAST((@retry_delay - FLOOR(@retry_delay)) * 1000000 AS INT),
                            DATEADD(SECOND, CAST(FLOOR(@retry_delay) AS INT), @now)
                        ),
                        dispatch_seq = dispatch_seq + 1,
                        last_dispatched_at = @now,
                        updated_at = @now,
                        last_error = @error,
                        error_code = @error_code,
                        error_kind = N'transient',
                        lease_owner = NULL,
                        lease_token = NULL,
                        lease_expires_at = NULL
                    WHERE id = @document_id AND lease_token = @lease_token;
                END
            ELSE  -- permanent, or transient with no attempt left
                BEGIN
                    UPDATE dbo.documents
                    SET
                        status = N'failed',
                        updated_at = @now,
                        last_error = @error,
                        error_code = @error_code,
                        error_kind = @outcome,
                        lease_owner = NULL,
                        lease_token = NULL,
                        lease_expires_at = NULL
                    WHERE id = @document_id AND lease_token = @lease_token;
                END;

            UPDATE dbo.attempts
            SET
                outcome = IIF(@outcome = N'success', N'completed', @outcome),
                ended_at = @now,
                error_code = COALESCE(@error_code, error_code),
                error = COALESCE(@error, error)
            WHERE lease_token = @lease_token AND outcome = N'running';

            SELECT
                @status = d.status,
                @not_before = d.not_before,
                @dispatch_seq = d.dispatch_seq
            FROM dbo.documents AS d
            WHERE d.id = @document_id;
        END;

    COMMIT TRANSACTION;

    SELECT
        @applied AS applied,
        @status AS status,
        @not_before AS not_before,
        @dispatch_seq AS dispatch_seq;
END;
