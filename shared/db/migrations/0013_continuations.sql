-- Continuations and batches (issue 9). A continuation waits in `awaiting` for its parent (after_id) to
-- finish; a batch callback (after_batch_id) for every child of its batch. Both are promoted by triggers in the
-- transaction that finishes the parent (or the batch's last child): to `scheduled`, due now, so the
-- scheduler publishes them like any delayed job; or to `skipped` (final, with the reason) when the parent
-- did not succeed and the continuation asked for success. Nothing lives outside Postgres, so a restart of any
-- service in between loses nothing.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('scheduled', 'enqueued', 'processing', 'retrying', 'succeeded', 'failed', 'deleted', 'cancelled',
     'awaiting', 'skipped'));

CREATE TABLE batches (
    id          uuid PRIMARY KEY,
    total       integer CHECK (total >= 0),  -- NULL: still open, children may join (sealed by seal_batch)
    succeeded   integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,   -- failed, cancelled, deleted or skipped children
    callback_id uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

ALTER TABLE jobs ADD COLUMN after_id uuid REFERENCES jobs (id) ON DELETE SET NULL;
ALTER TABLE jobs ADD COLUMN after_on text CHECK (after_on IN ('succeeded', 'finished'));
ALTER TABLE jobs ADD COLUMN batch_id uuid REFERENCES batches (id) ON DELETE SET NULL;
ALTER TABLE jobs ADD COLUMN batch_counted boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN after_batch_id uuid REFERENCES batches (id) ON DELETE SET NULL;
CREATE INDEX jobs_after_idx ON jobs (after_id) WHERE state = 'awaiting';
CREATE INDEX jobs_after_batch_idx ON jobs (after_batch_id) WHERE state = 'awaiting';
CREATE INDEX jobs_batch_idx ON jobs (batch_id) WHERE batch_id IS NOT NULL;

-- shared/jobs.py FINAL_STATES, for the triggers below.
CREATE FUNCTION job_state_is_final(state text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT state IN ('succeeded', 'failed', 'deleted', 'cancelled', 'skipped')
$$;

-- A complete batch's callback becomes due (once: only an `awaiting` callback moves).
CREATE FUNCTION batch_promote_if_complete(batch batches) RETURNS void AS $$
BEGIN
    IF batch.total IS NOT NULL AND batch.succeeded + batch.failed >= batch.total THEN
        UPDATE batches SET finished_at = now() WHERE id = batch.id AND finished_at IS NULL;
        UPDATE jobs SET state = 'scheduled', run_at = now(), updated_at = now(),
                        state_reason = format('batch %s finished: %s succeeded, %s failed',
                                              batch.id, batch.succeeded, batch.failed)
         WHERE after_batch_id = batch.id AND state = 'awaiting';
        IF FOUND THEN
            PERFORM pg_notify('jobs_scheduled', now()::text);
        END IF;
    END IF;
END
$$ LANGUAGE plpgsql;

-- An open batch (children added over several transactions, as the reminder fan-out does) gets its total
-- when its producer is done; children that finished before are counted already.
CREATE FUNCTION seal_batch(batch_id uuid) RETURNS batches AS $$
DECLARE
    batch batches%ROWTYPE;
BEGIN
    UPDATE batches SET total = (SELECT count(*) FROM jobs WHERE jobs.batch_id = seal_batch.batch_id)
     WHERE id = seal_batch.batch_id AND total IS NULL
    RETURNING * INTO batch;
    IF FOUND THEN
        PERFORM batch_promote_if_complete(batch);
    END IF;
    RETURN batch;
END
$$ LANGUAGE plpgsql;

-- A job's first final state counts once for its batch. The batch row's lock serialises the children that
-- finish at the same moment on different workers: exactly one of them sees the batch complete and promotes
-- the callback.
CREATE FUNCTION jobs_batch_count() RETURNS trigger AS $$
DECLARE
    batch batches%ROWTYPE;
BEGIN
    NEW.batch_counted := true;
    UPDATE batches SET succeeded = succeeded + (NEW.state = 'succeeded')::int,
                       failed = failed + (NEW.state <> 'succeeded')::int
     WHERE id = NEW.batch_id
    RETURNING * INTO batch;
    IF FOUND THEN
        PERFORM batch_promote_if_complete(batch);
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_batch_count BEFORE UPDATE OF state ON jobs FOR EACH ROW
    WHEN (NEW.batch_id IS NOT NULL AND NOT OLD.batch_counted AND job_state_is_final(NEW.state))
    EXECUTE FUNCTION jobs_batch_count();

-- The continuations of a job that reached a final state: due now, or skipped with the reason. A skipped
-- continuation is final too, so its own continuations follow in turn.
CREATE FUNCTION jobs_continue() RETURNS trigger AS $$
BEGIN
    UPDATE jobs
       SET state = CASE WHEN after_on = 'finished' OR NEW.state = 'succeeded' THEN 'scheduled' ELSE 'skipped' END,
           run_at = now(), updated_at = now(),
           finished_at = CASE WHEN after_on = 'finished' OR NEW.state = 'succeeded' THEN NULL ELSE now() END,
           state_reason = CASE WHEN after_on = 'finished' OR NEW.state = 'succeeded'
                               THEN format('parent %s %s', NEW.id, NEW.state)
                               ELSE format('skipped: parent %s %s, and this job runs only after success',
                                           NEW.id, NEW.state) END
     WHERE after_id = NEW.id AND state = 'awaiting';
    IF FOUND THEN
        PERFORM pg_notify('jobs_scheduled', now()::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_continue AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state AND job_state_is_final(NEW.state))
    EXECUTE FUNCTION jobs_continue();
