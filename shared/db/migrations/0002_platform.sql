-- The event platform: users, events, participants, the audit of every email, daily reports,
-- and the seed's recurring jobs.

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    id           uuid PRIMARY KEY,
    title        text NOT NULL,
    description  text,
    location     text,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz,
    cancelled_at timestamptz,
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at >= starts_at)
);
CREATE INDEX events_starts_idx ON events (starts_at);
CREATE INDEX events_archivable_idx ON events (coalesce(ends_at, starts_at)) WHERE archived_at IS NULL;
CREATE INDEX events_created_idx ON events (created_at);

CREATE TABLE participants (
    id         uuid PRIMARY KEY,
    event_id   uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    email      text NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, email)
);
CREATE INDEX participants_created_idx ON participants (created_at);

CREATE TABLE emails (
    id              uuid PRIMARY KEY,
    job_id          uuid REFERENCES jobs (id) ON DELETE SET NULL,
    idempotency_key text NOT NULL UNIQUE,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    template        text NOT NULL,
    message_id      text NOT NULL,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    smtp_code       integer,
    smtp_reply      text,
    attempts        integer NOT NULL DEFAULT 0,
    event_id        uuid,
    participant_id  uuid,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX emails_job_idx ON emails (job_id);
CREATE INDEX emails_recipient_idx ON emails (recipient);
CREATE INDEX emails_event_idx ON emails (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX emails_updated_idx ON emails (updated_at, status);

CREATE TABLE reports (
    day        date PRIMARY KEY,
    content    jsonb NOT NULL,
    job_id     uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO recurring_jobs (id, kind, cron, timezone) VALUES
    ('cleanup-expired-events', 'maintenance.cleanup_expired_events', '0 2 * * *', 'UTC'),
    ('generate-daily-report', 'maintenance.daily_report', '0 6 * * *', 'UTC'),
    ('cleanup-old-logs', 'maintenance.cleanup_old_logs', '0 3 * * 0', 'UTC')
ON CONFLICT (id) DO NOTHING;

-- The reaper: requeues jobs whose worker stopped heartbeating and removes dead servers.
INSERT INTO recurring_jobs (id, kind, cron, timezone, misfire_policy) VALUES
    ('reap-dead-servers', 'maintenance.reap_dead_servers', '* * * * *', 'UTC', 'skip')
ON CONFLICT (id) DO NOTHING;
