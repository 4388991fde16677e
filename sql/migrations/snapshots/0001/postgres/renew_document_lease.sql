-- renew_document_lease: the heartbeat. True only while the token still holds the lease;
-- false tells the worker to stop at once. Also records the stage the worker is in.
CREATE OR REPLACE FUNCTION renew_document_lease(
    p_document_id text,
    p_lease_token text,
    p_lease_seconds double precision,
    p_stage text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE documents d
    SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
        current_stage = p_stage,
        updated_at = clock_timestamp()
    WHERE d.id = p_document_id AND d.lease_token = p_lease_token AND d.status = 'processing';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE attempts a SET stage = p_stage WHERE a.lease_token = p_lease_token;
    RETURN true;
END;
$$;
