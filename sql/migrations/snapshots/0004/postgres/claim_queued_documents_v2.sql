-- claim_queued_documents_v2: polling. Leases up to p_limit ready queued rows, oldest first,
-- in one statement; rows other claimers have locked are skipped, never waited for or shared.
-- p_limit is the caller's free processing slots: never more are returned.
-- v2 (migration 0004) adds p_ready_for_seconds: only rows ready for at least that long
-- (ready since coalesce(not_before, created_at)) are taken. 0 is v1's behaviour; Service
-- Bus workers pass a threshold for their slow safety-net poll, so that it only takes rows
-- whose wake-up message never arrived. The partial index ix_documents_queued_ready
-- (migration 0004) has the ORDER BY's order, so LIMIT stops after the rows it takes
-- instead of sorting every queued row.
CREATE OR REPLACE FUNCTION claim_queued_documents_v2(
    p_worker_id text,
    p_lease_seconds double precision,
    p_limit integer,
    p_ready_for_seconds double precision
) RETURNS TABLE (
    document_id text,
    collection text,
    lease_token text,
    lease_expires_at timestamptz,
    attempt integer,
    dispatch_seq integer,
    blob_key text,
    content_type text
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
        SELECT d.id
        FROM documents d
        WHERE d.status = 'queued'
          AND (d.not_before IS NULL OR d.not_before <= t)
          AND coalesce(d.not_before, d.created_at)
              <= t - make_interval(secs => greatest(p_ready_for_seconds, 0))
          AND d.attempts < d.max_attempts
        ORDER BY coalesce(d.not_before, d.created_at), d.created_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), leased AS (
        UPDATE documents d
        SET status = 'processing',
            lease_token = gen_random_uuid()::text,
            lease_owner = p_worker_id,
            lease_expires_at = t + make_interval(secs => p_lease_seconds),
            attempts = d.attempts + 1,
            started_at = coalesce(d.started_at, t),
            current_stage = 'queued',
            updated_at = t
        FROM picked p
        WHERE d.id = p.id
        RETURNING d.id, d.collection, d.lease_token, d.lease_expires_at, d.attempts,
                  d.dispatch_seq, d.blob_key, d.content_type, d.not_before, d.created_at
    ), recorded AS (
        INSERT INTO attempts (document_id, number, lease_token, worker_id, started_at, outcome,
                              stage)
        SELECT l.id, l.attempts, l.lease_token, p_worker_id, t, 'running', 'queued'
        FROM leased l
    )
    SELECT l.id::text, l.collection::text, l.lease_token::text, l.lease_expires_at, l.attempts,
           l.dispatch_seq, l.blob_key::text, l.content_type::text
    FROM leased l
    ORDER BY coalesce(l.not_before, l.created_at), l.created_at;  -- the order they were picked
END;
$$;
