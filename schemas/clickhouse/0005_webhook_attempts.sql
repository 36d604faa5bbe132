-- One row per webhook delivery attempt (schemas/avro/webhook_attempt.avsc).
CREATE TABLE IF NOT EXISTS clickwire.webhook_attempts
(
    event_id          String,
    subscription_id   String,
    attempt           UInt16,
    ts_ms             DateTime64(3, 'UTC'),
    status            UInt16,
    latency_ms        Float64,
    outcome           LowCardinality(String),
    error_class       LowCardinality(Nullable(String)),
    response_excerpt  Nullable(String),
    next_attempt_ms   Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_ms)
ORDER BY (subscription_id, ts_ms, event_id, attempt)
SETTINGS non_replicated_deduplication_window = 1000;
