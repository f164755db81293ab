-- A running job's progress (issue 9): written by its handler through context.progress(), at most every
-- PROGRESS_INTERVAL_MS; kept after the job ends, so a finished job shows how far it got.
ALTER TABLE jobs ADD COLUMN progress_done bigint;
ALTER TABLE jobs ADD COLUMN progress_total bigint;
ALTER TABLE jobs ADD COLUMN progress_message text;
ALTER TABLE jobs ADD COLUMN progress_at timestamptz;
