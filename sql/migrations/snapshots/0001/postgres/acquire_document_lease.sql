-- acquire_document_lease: lease one document by id, or say why not (docs/lease-contract.md).
--
-- A worker holding a message for this very document waits briefly for the row lock rather
-- than skipping it as the claimers do; a lock timeout answers 'held'. The caller runs each
-- call in its own transaction, so SET LOCAL ends with it.
CREATE OR REPLACE FUNCTION acquire_document_lease(
    p_document_id text,
    p_worker_id text,
    p_lease_seconds double precision
) RETURNS TABLE (
    outcome text,
    status text,
    dispatch_seq integer,
    not_before timestamptz,
    lease_token text,
    lease_expires_at timestamptz,
    attempt integer,
    collection text,
    blob_key text,
    content_type text
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    doc documents%ROWTYPE;
    t timestamptz;
    message text;
BEGIN
    SET LOCAL lock_timeout = '2s';
    BEGIN
        SELECT * INTO doc FROM documents WHERE id = p_document_id FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        outcome := 'held';
        SELECT d.status, d.dispatch_seq INTO status, dispatch_seq
        FROM documents d WHERE d.id = p_document_id;
        RETURN NEXT;
        RETURN;
    END;
    t := clock_timestamp();  -- read after the lock wait, never before

    IF doc.id IS NULL THEN
        outcome := 'missing';
        RETURN NEXT;
        RETURN;
    END IF;
    status := doc.status;
    dispatch_seq := doc.dispatch_seq;
    IF doc.status IN ('completed', 'failed', 'deleted') THEN
        outcome := 'terminal';
    ELSIF doc.status = 'queued' AND doc.not_before > t THEN
        outcome := 'not_ready';
        not_before := doc.not_before;
    ELSIF (doc.status = 'queued' OR doc.lease_expires_at <= t)
          AND doc.attempts < doc.max_attempts THEN
        outcome := 'acquired';
    ELSE
        outcome := 'held';
    END IF;
    IF outcome <> 'acquired' THEN
        RETURN NEXT;
        RETURN;
    END IF;

    IF doc.status = 'processing' THEN  -- taking over a lease that expired
        message := format(
            'worker %s stopped renewing its lease during stage %s (attempt %s of %s)',
            doc.lease_owner, coalesce(doc.current_stage, 'unknown'), doc.attempts,
            doc.max_attempts);
        UPDATE attempts
        SET outcome = 'expired', ended_at = t, error_code = 'lease_expired', error = message
        WHERE lease_token = doc.lease_token AND outcome = 'running';
        DELETE FROM chunks WHERE document_id = doc.id AND lease_token = doc.lease_token;
    END IF;

    status := 'processing';
    lease_token := gen_random_uuid()::text;
    lease_expires_at := t + make_interval(secs => p_lease_seconds);
    attempt := doc.attempts + 1;
    collection := doc.collection;
    blob_key := doc.blob_key;
    content_type := doc.content_type;
    UPDATE documents
    SET status = 'processing',
        lease_token = acquire_document_lease.lease_token,
        lease_owner = p_worker_id,
        lease_expires_at = acquire_document_lease.lease_expires_at,
        attempts = acquire_document_lease.attempt,
        started_at = coalesce(started_at, t),
        current_stage = 'queued',
        updated_at = t
    WHERE id = doc.id;
    INSERT INTO attempts (document_id, number, lease_token, worker_id, started_at, outcome, stage)
    VALUES (doc.id, attempt, acquire_document_lease.lease_token, p_worker_id, t, 'running',
            'queued');
    RETURN NEXT;
END;
$$;
