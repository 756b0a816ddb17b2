"""Redis: the data client, cluster introspection, rate limiting, response cache, idempotency."""
