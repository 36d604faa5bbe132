-- Records a service could not process (schemas/avro/dead_letter.avsc). The Avro `bytes` fields
-- key and value are stored base64-encoded (clickwire.clickhouse encodes bytes values that way),
-- so any payload survives the text insert format untouched.
CREATE TABLE IF NOT EXISTS clickwire.dead_letters
(
    source_topic  LowCardinality(String),
    partition     Int32,
    offset        Int64,
    key           Nullable(String) COMMENT 'base64 of the original key bytes',
    value         String COMMENT 'base64 of the original value bytes',
    reason        String,
    error_class   LowCardinality(String),
    service       LowCardinality(String),
    ts_ms         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_ms)
ORDER BY (service, source_topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;
