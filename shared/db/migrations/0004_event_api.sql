-- What the events API needs beyond the platform schema: replayable creates and per-event job lookup.

-- POST /api/events with an Idempotency-Key returns the event it created the first time; the
-- fingerprint of the request tells a true retry from a reuse of the key with other content.
ALTER TABLE events
    ADD COLUMN idempotency_key     text UNIQUE,
    ADD COLUMN request_fingerprint text,
    -- Bumped whenever the event's jobs are rescheduled, so moving an event back to an earlier
    -- start gets fresh job idempotency keys instead of colliding with the deleted jobs of that time.
    ADD COLUMN schedule_revision   integer NOT NULL DEFAULT 0;

-- An event's reminder jobs are found by their argument, not by a link table.
CREATE INDEX jobs_event_id_idx ON jobs ((args ->> 'event_id')) WHERE args ? 'event_id';
