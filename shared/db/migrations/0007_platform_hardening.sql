-- Redaction for read-only search, and the send lease of the `emails` audit.

-- The redaction rule of services/api/redaction.py, for the search a read-only caller runs: the same
-- patterns (tests/unit/test_redaction.py compares them), so what the API shows redacted cannot be
-- found by searching for a piece of it.
CREATE FUNCTION secret_name_pattern() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN $re$pass(word|wd|phrase)?|token|secret|api[_-]?key|credential|authori[sz]ation|private[_-]?key|cookie$re$;

CREATE FUNCTION secret_pair_pattern() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN $re$((pass(word|wd|phrase)?|token|secret|api[_-]?key|credential|authori[sz]ation|private[_-]?key|cookie)[a-z0-9_-]*[\"']?[ \t]*[:=][ \t]*[\"']?((bearer|basic)[ \t]+)?)[^][ \t\r\n\"',;&()<>{}]+$re$;

-- `value` with the entries under secret-looking keys replaced by "[redacted]", at any depth.
CREATE FUNCTION jsonb_redact_secrets(value jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb;
    entry record;
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        result := '{}'::jsonb;
        FOR entry IN SELECT key, item FROM jsonb_each(value) AS e(key, item) LOOP
            result := result || jsonb_build_object(entry.key, CASE WHEN entry.key ~* secret_name_pattern()
                                                                   THEN '"[redacted]"'::jsonb
                                                                   ELSE jsonb_redact_secrets(entry.item) END);
        END LOOP;
        RETURN result;
    WHEN 'array' THEN
        SELECT coalesce(jsonb_agg(jsonb_redact_secrets(item) ORDER BY position), '[]'::jsonb) INTO result
          FROM jsonb_array_elements(value) WITH ORDINALITY AS e(item, position);
        RETURN result;
    ELSE
        RETURN value;
    END CASE;
END
$$;

-- The scalar values under secret-looking keys, as text (what must not reappear in an error).
CREATE FUNCTION jsonb_secret_values(value jsonb, inside boolean DEFAULT false) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    found text[] := '{}';
    entry record;
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        FOR entry IN SELECT key, item FROM jsonb_each(value) AS e(key, item) LOOP
            found := found || jsonb_secret_values(entry.item, inside OR entry.key ~* secret_name_pattern());
        END LOOP;
    WHEN 'array' THEN
        FOR entry IN SELECT item FROM jsonb_array_elements(value) AS e(item) LOOP
            found := found || jsonb_secret_values(entry.item, inside);
        END LOOP;
    WHEN 'string' THEN
        IF inside THEN found := ARRAY[value #>> '{}']; END IF;
    WHEN 'number' THEN
        IF inside THEN found := ARRAY[value::text]; END IF;
    ELSE
        NULL;
    END CASE;
    RETURN found;
END
$$;

-- Free text with the given secret values (longest first) and secret-looking name=value pairs struck.
CREATE FUNCTION redact_text(text_value text, secrets text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    secret text;
BEGIN
    IF text_value IS NULL OR text_value = '' THEN
        RETURN text_value;
    END IF;
    FOR secret IN SELECT s FROM unnest(secrets) AS u(s) WHERE s <> '' ORDER BY length(s) DESC LOOP
        text_value := replace(text_value, secret, '[redacted]');
    END LOOP;
    RETURN regexp_replace(text_value, secret_pair_pattern(), '\1[redacted]', 'gi');
END
$$;

-- What a read-only caller's search matches: jobs_search_text of 0003_search.sql, redacted. The search
-- keeps the trigram index on jobs_search_text and filters the candidates with this.
CREATE FUNCTION jobs_redacted_search_text(args jsonb, last_error text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_redact_secrets(args)::text || ' ' || coalesce(redact_text(last_error, jsonb_secret_values(args)), '');

-- The send lease: a run marks the row `sending` with its owner and an expiry before the SMTP conversation,
-- so a second run of the same email (a redelivery after a crash, a retry) waits instead of sending in
-- parallel, and takes over only once the lease has expired.
ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check CHECK (status IN ('queued', 'sending', 'sent', 'failed'));
ALTER TABLE emails
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz;
