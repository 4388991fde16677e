-- complete_document_lease: the completion transaction (docs/lease-contract.md, "complete")
-- as one procedure, so that a worker's completion is one EXEC and one round trip, as on
-- PostgreSQL. Added in migration 0007.
--
-- Locks the row by id (UPDLOCK) and compares the token: completed = 0, and nothing
-- changes, when @lease_token no longer holds the lease (the caller's chunks must never
-- become visible). Otherwise drops the chunks staged under any other token, at most 1,000
-- rows per DELETE (no escalation to a lock on the whole chunks table), makes this token's
-- chunks the live ones, counted here, completes the row with the completion's metadata
-- and closes the attempt with its per-stage seconds (JSON text). Identifier parameters are
-- one character wider than their columns: T-SQL silently truncates an over-long argument,
-- and a 37-character value can equal no stored token.
CREATE OR ALTER PROCEDURE dbo.complete_document_lease
    @document_id NVARCHAR(37),
    @lease_token NVARCHAR(37),
    @page_count INT,
    @embedding_model NVARCHAR(128),
    @embedding_dimensions INT,
    @stage_seconds NVARCHAR(MAX)
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE
        @now DATETIMEOFFSET(6),
        @completed BIT = 0,
        @status NVARCHAR(16),
        @current_token NVARCHAR(36);

    BEGIN TRANSACTION;

    SELECT
        @status = d.status,
        @current_token = d.lease_token
    FROM dbo.documents AS d WITH (UPDLOCK, ROWLOCK)
    WHERE d.id = @document_id;

    SET @now = SYSUTCDATETIME();  -- read after the lock wait, never before

    -- Variables compare under the database's (case-insensitive) collation: compare the
    -- token as its column does since migration 0007, exactly.
    IF @status = N'processing' AND @current_token = @lease_token COLLATE Latin1_General_100_BIN2
        BEGIN
            SET @completed = 1;
            WHILE 1 = 1
                BEGIN
                    DELETE TOP (1000) FROM dbo.chunks
                    WHERE document_id = @document_id AND lease_token <> @lease_token;
                    IF @@ROWCOUNT < 1000 BREAK;
                END;

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
                page_count = @page_count,
                embedding_model = @embedding_model,
                embedding_dimensions = @embedding_dimensions,
                lease_owner = NULL,
                lease_token = NULL,
                lease_expires_at = NULL
            WHERE id = @document_id AND lease_token = @lease_token;

            UPDATE dbo.attempts
            SET
                outcome = N'completed',
                ended_at = @now,
                stage_seconds = @stage_seconds
            WHERE lease_token = @lease_token AND outcome = N'running';
        END;

    COMMIT TRANSACTION;

    SELECT @completed AS completed;
END;
