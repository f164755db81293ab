"""Request plumbing every part of the api shares: the error shape and its middleware, request parsing,
the application's typed keys."""
