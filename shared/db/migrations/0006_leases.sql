-- Job leases: a `processing` job is owned by (worker, lease_expires_at). Only an expired lease lets another
-- worker take the job; the holder renews it with its heartbeat and its outcome counts only while it is live.
ALTER TABLE jobs ADD COLUMN lease_expires_at timestamptz;
UPDATE jobs SET lease_expires_at = now() WHERE state = 'processing';

-- Deliveries a worker acked without running them (a copy for an older attempt, a job already finished or
-- owned by a live lease), counted per service and reason for /metrics.
CREATE TABLE dropped_deliveries (
    service text NOT NULL,
    reason  text NOT NULL,
    count   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (service, reason)
);
