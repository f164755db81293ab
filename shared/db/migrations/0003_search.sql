-- Operator search over the whole job history, and the indexes the dashboard's lists and counts use.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- What a search matches: the arguments (recipient, event id, ...) and the last error. One function
-- for the index and the query, so they cannot drift apart and the planner always recognises the
-- expression. jsonb's text form is stable, hence IMMUTABLE is honest here.
CREATE FUNCTION jobs_search_text(args jsonb, last_error text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN args::text || ' ' || coalesce(last_error, '');

-- A trigram index serves ILIKE '%needle%' anywhere in the text, not only whole words.
CREATE INDEX jobs_search_trgm_idx ON jobs USING gin (jobs_search_text(args, last_error) gin_trgm_ops);

-- Keyset pagination orders by (updated_at, id) descending; an index in exactly that order lets a
-- page be read straight off the index, with or without a state filter. This replaces the
-- (state, updated_at DESC, id) index, whose ascending id could not serve that order.
DROP INDEX IF EXISTS jobs_state_updated_idx;
CREATE INDEX jobs_state_updated_idx ON jobs (state, updated_at DESC, id DESC);
CREATE INDEX jobs_updated_idx ON jobs (updated_at DESC, id DESC);

-- Counts by state walk this index only: with B-tree deduplication it stays a few MB for a million
-- rows, about a tenth of the index above, which makes the dashboard's 2-second poll cheap.
CREATE INDEX jobs_state_idx ON jobs (state);
