-- Cancel (issue 9): a final `cancelled` state, and who asked for it. A `processing` job moved here loses its
-- lease at once: its holder's next renewal (state = 'processing' required) comes back without it and stops
-- the handler; claims never take a cancelled job, so it never runs again unless requeued.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('scheduled', 'enqueued', 'processing', 'retrying', 'succeeded', 'failed', 'deleted', 'cancelled'));
ALTER TABLE jobs ADD COLUMN cancelled_by text;
