-- The job engine: jobs, their history, logs, recurring definitions and server heartbeats.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '{}'::jsonb,
    queue           text NOT NULL,              -- queue class: critical, default, low
    service         text NOT NULL,              -- routing key of the service queue
    priority        smallint NOT NULL,
    state           text NOT NULL,
    state_reason    text,
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    run_at          timestamptz NOT NULL DEFAULT now(),
    idempotency_key text UNIQUE,
    recurring_id    text,
    fire_time       timestamptz,
    parent_id       uuid REFERENCES jobs (id) ON DELETE SET NULL,
    worker          text,
    started_at      timestamptz,
    finished_at     timestamptz,
    published_at    timestamptz,
    last_error      text,
    last_traceback  text,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_state_check CHECK (state IN
        ('scheduled', 'enqueued', 'processing', 'retrying', 'succeeded', 'failed', 'deleted')),
    CONSTRAINT jobs_recurring_fire_time_key UNIQUE (recurring_id, fire_time)
);

-- "Due scheduled jobs" and "published-never-confirmed" are partial indexes: they stay small
-- however many finished jobs the table holds.
CREATE INDEX jobs_due_idx ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_unpublished_idx ON jobs (updated_at) WHERE state = 'enqueued' AND published_at IS NULL;
CREATE INDEX jobs_state_updated_idx ON jobs (state, updated_at DESC, id);
CREATE INDEX jobs_kind_idx ON jobs (kind, updated_at DESC);
CREATE INDEX jobs_processing_worker_idx ON jobs (worker) WHERE state = 'processing';
CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_recurring_idx ON jobs (recurring_id, created_at DESC) WHERE recurring_id IS NOT NULL;

CREATE TABLE job_states (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    state       text NOT NULL,
    reason      text,
    error       text,
    traceback   text,
    worker      text,
    attempt     integer NOT NULL,
    duration_ms double precision,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX job_states_job_idx ON job_states (job_id, id);
CREATE INDEX job_states_created_idx ON job_states (created_at, state);

-- Every transition is one history row, whatever code path made it: the trigger cannot be forgotten.
CREATE FUNCTION jobs_record_transition() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state OR NEW.attempt IS DISTINCT FROM OLD.attempt THEN
        INSERT INTO job_states (job_id, state, reason, error, traceback, worker, attempt, duration_ms)
        VALUES (
            NEW.id, NEW.state, NEW.state_reason,
            CASE WHEN NEW.state IN ('failed', 'retrying') THEN NEW.last_error END,
            CASE WHEN NEW.state IN ('failed', 'retrying') THEN NEW.last_traceback END,
            NEW.worker, NEW.attempt,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.state = 'processing' AND OLD.started_at IS NOT NULL
                 THEN extract(epoch FROM clock_timestamp() - OLD.started_at) * 1000 END
        );
    END IF;
    IF TG_OP = 'INSERT' AND NEW.state = 'scheduled' THEN
        PERFORM pg_notify('jobs_scheduled', NEW.run_at::text);
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_record_transition AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_record_transition();

CREATE TABLE job_logs (
    id         bigserial PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    level      text NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_job_idx ON job_logs (job_id, id);
CREATE INDEX job_logs_created_idx ON job_logs (created_at);

CREATE TABLE recurring_jobs (
    id              text PRIMARY KEY,
    kind            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '{}'::jsonb,
    cron            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    misfire_policy  text NOT NULL DEFAULT 'fire_once'
                    CHECK (misfire_policy IN ('fire_once', 'skip', 'fire_all')),
    misfire_grace_seconds integer NOT NULL DEFAULT 3600 CHECK (misfire_grace_seconds >= 0),
    enabled         boolean NOT NULL DEFAULT true,
    last_fire_time  timestamptz,
    last_job_id     uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION recurring_jobs_notify() RETURNS trigger AS $$
BEGIN
    -- Only definition changes wake the schedulers; their own last_fire_time writes do not.
    IF TG_OP <> 'UPDATE' OR (NEW.cron, NEW.timezone, NEW.enabled, NEW.kind, NEW.args, NEW.misfire_policy,
                             NEW.misfire_grace_seconds)
                   IS DISTINCT FROM (OLD.cron, OLD.timezone, OLD.enabled, OLD.kind, OLD.args,
                                     OLD.misfire_policy, OLD.misfire_grace_seconds) THEN
        PERFORM pg_notify('recurring_jobs_changed', COALESCE(NEW.id, OLD.id));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER recurring_jobs_notify AFTER INSERT OR UPDATE OR DELETE ON recurring_jobs
    FOR EACH ROW EXECUTE FUNCTION recurring_jobs_notify();

CREATE TABLE servers (
    id             text PRIMARY KEY,
    service        text NOT NULL,
    host           text NOT NULL,
    pid            integer NOT NULL,
    queues         text[] NOT NULL DEFAULT '{}',
    concurrency    integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);
