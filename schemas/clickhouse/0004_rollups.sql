-- Rollups kept by materialized views on clickwire.clicks. They store uniqExact/uniq states, not
-- counts, because a click inserted twice under different dedup tokens reaches the view twice:
-- uniqExactMerge(clicks) stays exact where a count would inflate.
CREATE TABLE IF NOT EXISTS clickwire.clicks_per_minute
(
    minute        DateTime('UTC'),
    workspace_id  LowCardinality(String),
    link_id       String,
    country       LowCardinality(String),
    device_type   LowCardinality(String),
    is_bot        Bool,
    clicks        AggregateFunction(uniqExact, String),
    visitors      AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (workspace_id, link_id, minute, country, device_type, is_bot);

CREATE MATERIALIZED VIEW IF NOT EXISTS clickwire.clicks_per_minute_mv
TO clickwire.clicks_per_minute
AS SELECT
    toDateTime(toStartOfMinute(ts_ms), 'UTC') AS minute,
    workspace_id,
    link_id,
    country,
    device_type,
    is_bot,
    uniqExactState(click_id) AS clicks,
    uniqState(visitor_hash) AS visitors
FROM clickwire.clicks
GROUP BY minute, workspace_id, link_id, country, device_type, is_bot;

-- campaign is '' for clicks on links without one. human_clicks holds the state of
-- uniqExactIf(click_id, NOT is_bot), which has the type of plain uniqExact: read it with uniqExactMerge.
CREATE TABLE IF NOT EXISTS clickwire.campaign_hourly
(
    hour          DateTime('UTC'),
    workspace_id  LowCardinality(String),
    campaign      LowCardinality(String),
    clicks        AggregateFunction(uniqExact, String),
    visitors      AggregateFunction(uniq, String),
    human_clicks  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, campaign, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS clickwire.campaign_hourly_mv
TO clickwire.campaign_hourly
AS SELECT
    toDateTime(toStartOfHour(ts_ms), 'UTC') AS hour,
    workspace_id,
    ifNull(campaign, '') AS campaign,
    uniqExactState(click_id) AS clicks,
    uniqState(visitor_hash) AS visitors,
    uniqExactIfState(click_id, NOT is_bot) AS human_clicks
FROM clickwire.clicks
GROUP BY hour, workspace_id, campaign;
