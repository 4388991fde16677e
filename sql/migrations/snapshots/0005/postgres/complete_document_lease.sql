-- complete_document_lease: the completion transaction (docs/lease-contract.md, "complete")
-- as one function, so that a worker's completion is one statement and one round trip.
--
-- Locks the row while p_lease_token still holds it (false, and nothing changes, when it no
-- longer does: the caller's chunks must never become visible); drops chunks staged under
-- any other token; makes this token's chunks the live ones, counted here rather than taken
-- from the caller; completes the row with the completion's metadata and closes the
-- attempt with its per-stage seconds (JSON text). release_document_lease('success') is the
-- same completion without the metadata. Added in migration 0005.
CREATE OR REPLACE FUNCTION complete_document_lease(
    p_document_id text,
    p_lease_token text,
    p_page_count integer,
    p_embedding_model text,
    p_embedding_dimensions integer,
    p_stage_seconds text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    t timestamptz;
    v_status text;
    v_token text;
BEGIN
    -- By primary key alone, then compared: a condition on status here let the planner
    -- walk a status index over every row being processed.
    SELECT d.status, d.lease_token INTO v_status, v_token
    FROM documents d WHERE d.id = p_document_id FOR UPDATE;
    IF NOT FOUND OR v_status <> 'processing' OR v_token IS DISTINCT FROM p_lease_token THEN
        RETURN false;
    END IF;
    t := clock_timestamp();  -- read after the row lock, never before
    DELETE FROM chunks c WHERE c.document_id = p_document_id AND c.lease_token <> p_lease_token;
    UPDATE documents d
    SET status = 'completed', completed_at = t, updated_at = t,
        chunk_count = (SELECT count(*) FROM chunks c WHERE c.document_id = p_document_id),
        chunks_token = p_lease_token, current_stage = NULL,
        last_error = NULL, error_code = NULL, error_kind = NULL,
        page_count = p_page_count, embedding_model = p_embedding_model,
        embedding_dimensions = p_embedding_dimensions,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    WHERE d.id = p_document_id;
    UPDATE attempts a
    SET outcome = 'completed', ended_at = t, stage_seconds = p_stage_seconds
    WHERE a.lease_token = p_lease_token AND a.outcome = 'running';
    RETURN true;
END;
$$;
