-- One row per enriched click: every field of schemas/avro/enriched_click.avsc under its Avro name.
-- timestamp-millis fields are DateTime64(3, 'UTC') (clickwire.clickhouse turns epoch-ms ints into them).
-- Duplicates are removed at insert time by insert_deduplication_token (a retried batch is dropped
-- whole); ReplacingMergeTree only tidies up what a different token let through, so exact counts
-- use uniqExact(click_id) or FINAL, never a bare count().
CREATE TABLE IF NOT EXISTS clickwire.clicks
(
    click_id         String,
    ts_ms            DateTime64(3, 'UTC'),
    link_id          String,
    workspace_id     LowCardinality(String),
    domain           LowCardinality(String),
    code             String,
    method           LowCardinality(String),
    user_agent       String,
    referer          Nullable(String),
    accept_language  LowCardinality(Nullable(String)),
    purpose          LowCardinality(Nullable(String)),
    ch_ua            LowCardinality(Nullable(String)),
    ch_ua_mobile     LowCardinality(Nullable(String)),
    ch_ua_platform   LowCardinality(Nullable(String)),
    query            String,
    qr               Bool,
    status           UInt16,
    destination      Nullable(String),
    redirector_id    LowCardinality(String),
    ip               String,
    tags             Array(String),
    campaign         LowCardinality(Nullable(String)),
    utm_source       LowCardinality(Nullable(String)),
    utm_medium       LowCardinality(Nullable(String)),
    utm_campaign     LowCardinality(Nullable(String)),
    utm_term         Nullable(String),
    utm_content      Nullable(String),
    link_created_ms  Nullable(DateTime64(3, 'UTC')),
    country          LowCardinality(String),
    region           LowCardinality(String),
    city             LowCardinality(String),
    latitude         Nullable(Float64),
    longitude        Nullable(Float64),
    asn              UInt32,
    as_org           LowCardinality(String),
    browser          LowCardinality(String),
    browser_version  LowCardinality(String),
    os               LowCardinality(String),
    os_version       LowCardinality(String),
    device_family    LowCardinality(String),
    device_type      LowCardinality(String),
    referrer_host    String,
    referrer_class   LowCardinality(String),
    is_bot           Bool,
    bot_kind         LowCardinality(String),
    bot_name         LowCardinality(String),
    trust_score      UInt8,
    trust_signals    Array(String),
    visitor_hash     String,
    enriched_ms      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_ms)
ORDER BY (workspace_id, link_id, ts_ms, click_id)
-- Non-replicated MergeTree ignores insert_deduplication_token unless this window is non-zero.
SETTINGS non_replicated_deduplication_window = 1000;
