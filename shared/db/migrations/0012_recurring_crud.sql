-- Recurring jobs created, replaced and removed at run time (issue 9): each may name its queue class
-- (NULL: its kind's). The notify trigger now also wakes the schedulers when the queue changes.
ALTER TABLE recurring_jobs ADD COLUMN queue text CHECK (queue IN ('critical', 'default', 'low'));

CREATE OR REPLACE FUNCTION recurring_jobs_notify() RETURNS trigger AS $$
BEGIN
    -- Only definition changes wake the schedulers; their own last_fire_time writes do not.
    IF TG_OP <> 'UPDATE' OR (NEW.cron, NEW.timezone, NEW.enabled, NEW.kind, NEW.args, NEW.misfire_policy,
                             NEW.misfire_grace_seconds, NEW.queue)
                   IS DISTINCT FROM (OLD.cron, OLD.timezone, OLD.enabled, OLD.kind, OLD.args,
                                     OLD.misfire_policy, OLD.misfire_grace_seconds, OLD.queue) THEN
        PERFORM pg_notify('recurring_jobs_changed', COALESCE(NEW.id, OLD.id));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
