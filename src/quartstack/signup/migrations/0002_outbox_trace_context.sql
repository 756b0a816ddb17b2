-- The trace context (W3C traceparent/tracestate as a JSON object) of the request that
-- wrote the event, so that the relay's later publish links back to it. NULL when
-- the request was not traced (tracing off, or rows written before this column).
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
