-- When a `retrying` job's delayed message is due back. Dead-lettering out of a classic delay queue is
-- at-most-once in RabbitMQ: the scheduler republishes retries whose message is long overdue.
ALTER TABLE jobs ADD COLUMN retry_at timestamptz;
CREATE INDEX jobs_overdue_retries_idx ON jobs (retry_at) WHERE state = 'retrying';
