-- The history trigger runs only where it writes a row (issue 11). The row trigger of 0001 ran its PL/pgSQL
-- function for every updated row and decided inside whether the state or the attempt changed; the updates
-- that change neither (marking a job published, renewing leases, storing progress) paid for the call anyway.
-- The same function, now behind a WHEN clause on UPDATE; every transition is still written by a trigger on
-- `jobs`, so no code path can forget the history.
DROP TRIGGER jobs_record_transition ON jobs;

CREATE TRIGGER jobs_record_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_record_transition();

CREATE TRIGGER jobs_record_transition AFTER UPDATE ON jobs
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state OR NEW.attempt IS DISTINCT FROM OLD.attempt)
    EXECUTE FUNCTION jobs_record_transition();
