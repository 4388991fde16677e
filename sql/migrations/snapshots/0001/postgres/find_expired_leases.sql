-- find_expired_leases: crash recovery. Rows whose lease expired go back to 'queued' with a
-- bumped dispatch_seq (or to 'failed' when no attempt is left), in one statement that skips
-- rows other sweepers hold, so every process may run it at once. Returns the moved rows.
CREATE OR REPLACE FUNCTION find_expired_leases(
    p_limit integer
) RETURNS TABLE (
    document_id text,
    collection text,
    dispatch_seq integer,
    status text,
    not_before timestamptz
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    t timestamptz := clock_timestamp();
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT d.id, d.lease_token, d.attempts < d.max_attempts AS requeue,
               format('worker %s stopped renewing its lease during stage %s (attempt %s of %s)',
                      d.lease_owner, coalesce(d.current_stage, 'unknown'), d.attempts,
                      d.max_attempts) AS message
        FROM documents d
        WHERE d.status = 'processing' AND d.lease_expires_at <= t
        ORDER BY d.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), ended AS (
        UPDATE attempts a
        SET outcome = 'expired', ended_at = t, error_code = 'lease_expired', error = p.message
        FROM picked p
        WHERE a.lease_token = p.lease_token AND a.outcome = 'running'
    ), dropped AS (
        DELETE FROM chunks c USING picked p
        WHERE c.document_id = p.id AND c.lease_token = p.lease_token
    ), moved AS (
        UPDATE documents d
        SET status = CASE WHEN p.requeue THEN 'queued' ELSE 'failed' END,
            dispatch_seq = d.dispatch_seq + CASE WHEN p.requeue THEN 1 ELSE 0 END,
            last_dispatched_at = CASE WHEN p.requeue THEN t ELSE d.last_dispatched_at END,
            not_before = NULL,
            error_code = 'lease_expired',
            error_kind = CASE WHEN p.requeue THEN 'transient' ELSE 'permanent' END,
            last_error = p.message,
            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
            updated_at = t
        FROM picked p
        WHERE d.id = p.id
        RETURNING d.id, d.collection, d.dispatch_seq, d.status, d.not_before
    )
    SELECT m.id::text, m.collection::text, m.dispatch_seq, m.status::text, m.not_before
    FROM moved m;
END;
$$;
