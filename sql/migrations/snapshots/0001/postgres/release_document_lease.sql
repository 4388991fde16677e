-- release_document_lease: the worker gives the lease back with an outcome.
--
-- success: the completion (stale chunks swapped out, chunk_count from the token's chunks);
-- transient with attempts left: queued again after p_retry_delay seconds as a new dispatch;
-- transient on the last attempt, or permanent: failed; interrupted: queued again without
-- spending the attempt. A stale token changes nothing and returns applied = false.
CREATE OR REPLACE FUNCTION release_document_lease(
    p_document_id text,
    p_lease_token text,
    p_outcome text,
    p_error_code text,
    p_error text,
    p_retry_delay double precision
) RETURNS TABLE (
    applied boolean,
    status text,
    not_before timestamptz,
    dispatch_seq integer
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    doc documents%ROWTYPE;
    t timestamptz;
BEGIN
    IF p_outcome NOT IN ('success', 'transient', 'permanent', 'interrupted') THEN
        RAISE EXCEPTION 'unknown release outcome %', p_outcome USING ERRCODE = '22023';
    END IF;
    SELECT * INTO doc FROM documents WHERE id = p_document_id FOR UPDATE;
    t := clock_timestamp();
    IF doc.id IS NULL OR doc.status <> 'processing'
       OR doc.lease_token IS DISTINCT FROM p_lease_token THEN
        RETURN QUERY SELECT false, doc.status::text, doc.not_before, doc.dispatch_seq;
        RETURN;
    END IF;

    IF p_outcome = 'success' THEN
        DELETE FROM chunks WHERE document_id = doc.id AND lease_token <> p_lease_token;
        UPDATE documents
        SET status = 'completed', completed_at = t, updated_at = t,
            chunk_count = (SELECT count(*) FROM chunks c WHERE c.document_id = doc.id),
            chunks_token = p_lease_token, current_stage = NULL,
            last_error = NULL, error_code = NULL, error_kind = NULL,
            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
        WHERE id = doc.id;
    ELSE
        DELETE FROM chunks WHERE document_id = doc.id AND lease_token = p_lease_token;
        IF p_outcome = 'interrupted' THEN
            UPDATE documents
            SET status = 'queued', attempts = attempts - 1, not_before = NULL, updated_at = t,
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = doc.id;
        ELSIF p_outcome = 'transient' AND doc.attempts < doc.max_attempts THEN
            UPDATE documents
            SET status = 'queued', not_before = t + make_interval(secs => p_retry_delay),
                dispatch_seq = dispatch_seq + 1, last_dispatched_at = t, updated_at = t,
                last_error = p_error, error_code = p_error_code, error_kind = 'transient',
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = doc.id;
        ELSE
            UPDATE documents
            SET status = 'failed', updated_at = t,
                last_error = p_error, error_code = p_error_code, error_kind = p_outcome,
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
            WHERE id = doc.id;
        END IF;
    END IF;

    UPDATE attempts
    SET outcome = CASE p_outcome WHEN 'success' THEN 'completed' ELSE p_outcome END,
        ended_at = t,
        error_code = coalesce(p_error_code, error_code),
        error = coalesce(p_error, error)
    WHERE lease_token = p_lease_token AND outcome = 'running';
    RETURN QUERY
    SELECT true, d.status::text, d.not_before, d.dispatch_seq FROM documents d WHERE d.id = doc.id;
END;
$$;
