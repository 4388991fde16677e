-- notify_document_queued: the trigger function by which a row that becomes queued and ready
-- wakes listening workers; migration 0006 attaches it to `documents`
-- (NOTIFY sheaf_queued, delivered at commit; identical notifications of one transaction
-- are folded into one). Only a wake-up: a worker that misses it finds the row at its next
-- poll, so nothing depends on the notification arriving.
CREATE OR REPLACE FUNCTION notify_document_queued() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('sheaf_queued', '');
    RETURN NULL;
END;
$$;
