"""Who may call what: authentication (bearer tokens, sessions, loopback), CSRF and Origin checks, roles,
rate limits, and the redaction of secrets in what is shown."""
