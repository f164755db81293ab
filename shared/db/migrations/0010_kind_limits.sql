-- Per-kind limits (issue 9). A job held back by its kind's limit goes back to `scheduled`: `limit_wait` says
-- which limit ('concurrency' or 'rate'), `limit_slot_at` is the start a rate wait reserved (its claim then
-- takes no second slot). Both are cleared when the job is claimed.
ALTER TABLE jobs ADD COLUMN limit_wait text CHECK (limit_wait IN ('concurrency', 'rate'));
ALTER TABLE jobs ADD COLUMN limit_slot_at timestamptz;

-- The next free start of each rate group (a GCRA without burst: starts spaced by period / rate).
CREATE TABLE rate_limit_slots (
    key     text PRIMARY KEY,
    next_at timestamptz NOT NULL
);

-- Counting a kind's running jobs at each limited claim, and finding its waiters when a run ends.
CREATE INDEX jobs_processing_kind_idx ON jobs (kind) WHERE state = 'processing';
CREATE INDEX jobs_limit_wait_idx ON jobs (kind, run_at) WHERE state = 'scheduled' AND limit_wait IS NOT NULL;
