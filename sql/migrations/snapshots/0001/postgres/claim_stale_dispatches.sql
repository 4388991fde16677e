-- claim_stale_dispatches: the reconciler. Ready queued rows whose last wake-up message is
-- older than p_older_than seconds get a new dispatch_seq in one statement and are returned
-- for a fresh message. Locked rows are skipped and a row just bumped is no longer stale, so
-- any number of reconcilers never return one row twice.
CREATE OR REPLACE FUNCTION claim_stale_dispatches(
    p_older_than double precision,
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
        SELECT d.id
        FROM documents d
        WHERE d.status = 'queued'
          AND (d.not_before IS NULL OR d.not_before <= t)
          AND (d.last_dispatched_at IS NULL
               OR d.last_dispatched_at <= t - make_interval(secs => p_older_than))
        ORDER BY d.last_dispatched_at NULLS FIRST, d.created_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE documents d
    SET dispatch_seq = d.dispatch_seq + 1, last_dispatched_at = t, updated_at = t
    FROM picked p
    WHERE d.id = p.id
    RETURNING d.id::text, d.collection::text, d.dispatch_seq, d.status::text, d.not_before;
END;
$$;
