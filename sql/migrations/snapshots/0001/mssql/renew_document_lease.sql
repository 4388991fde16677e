-- renew_document_lease: the heartbeat (docs/lease-contract.md). Returns renewed = 1 only
-- while the token still holds the lease; 0 tells the worker it lost the document and must
-- stop at once. Also records the stage the worker is in, on the row and on its attempt.
--
-- The token compare is in the UPDATE itself, so a renewal can never extend a lease that
-- was taken over, released or tombstoned. The clock is read when the statement starts: a
-- renewal that waited for the row lock grants a lease that much shorter, never longer.
-- Identifier parameters are one character wider than their columns: T-SQL silently
-- truncates an over-long argument, and a 37-character value can equal no stored token.
CREATE OR ALTER PROCEDURE dbo.renew_document_lease
    @document_id NVARCHAR(37),
    @lease_token NVARCHAR(37),
    @lease_seconds FLOAT,
    @stage NVARCHAR(32)
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
    DECLARE @renewed BIT = 0;

    BEGIN TRANSACTION;

    UPDATE dbo.documents
    SET
        lease_expires_at = @lease_expires_at,
        current_stage = @stage,
        updated_at = @now
    WHERE
        id = @document_id
        AND lease_token = @lease_token
        AND status = N'processing';
    SET @renewed = @@ROWCOUNT;

    IF @renewed = 1
        UPDATE dbo.attempts
        SET stage = @stage
        WHERE lease_token = @lease_token AND outcome = N'running';

    COMMIT TRANSACTION;

    SELECT @renewed AS renewed;
END;
