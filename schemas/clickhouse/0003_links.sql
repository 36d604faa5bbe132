-- Latest version of every link (schemas/avro/link.avsc), written from the compacted `links` topic.
-- `rules` is the Avro array of RoutingRule as a JSON string; `deleted` = 1 records a tombstone.
-- Read with FINAL (or argMax by updated_ms) and `WHERE NOT deleted`.
CREATE TABLE IF NOT EXISTS clickwire.links
(
    id                   String,
    workspace_id         LowCardinality(String),
    domain               LowCardinality(String),
    code                 String,
    destination          String,
    redirect_type        UInt16,
    created_ms           DateTime64(3, 'UTC'),
    updated_ms           DateTime64(3, 'UTC'),
    expires_ms           Nullable(DateTime64(3, 'UTC')),
    expired_url          Nullable(String),
    max_clicks           Nullable(Int64),
    tags                 Array(String),
    campaign             LowCardinality(Nullable(String)),
    utm_source           LowCardinality(Nullable(String)),
    utm_medium           LowCardinality(Nullable(String)),
    utm_campaign         LowCardinality(Nullable(String)),
    utm_term             Nullable(String),
    utm_content          Nullable(String),
    rules                String DEFAULT '[]',
    bot_policy           LowCardinality(String),
    preview_title        Nullable(String),
    preview_description  Nullable(String),
    preview_image        Nullable(String),
    destination_trust    UInt8,
    destination_flags    Array(String),
    blocked              Bool,
    deleted              UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY id
SETTINGS non_replicated_deduplication_window = 1000;
