-- Migration 2: per-minute rollups, fed by a materialized view on events.
--
-- Template fields, filled in by agentwatch before it runs the file: database,
-- rollups_ttl (a TTL clause, or nothing: kept).
--
-- Why a materialized view and not rollups computed in the sink: ClickHouse runs
-- the view on exactly the block inserted into events, inside the same INSERT, so
-- rollups_1m can only ever hold what events holds. A batch retried with its
-- insert_deduplication_token is dropped by events *and* by the view's target
-- (deduplicate_blocks_in_dependent_materialized_views = 1, set by the sink on
-- every insert, and non_replicated_deduplication_window below), so a retry cannot
-- count a minute twice. It costs the sink no Python time per event, works the same
-- on chDB and on a server, and rows that arrive late (a replay, an agent whose
-- clock is behind) simply add to their minute.
--
-- Reading it: rows are partial aggregates until ClickHouse merges them, so always
-- GROUP BY and sum(...) (quantilesTDigestMerge(...) for latency). The views of
-- migration 3 do that.
--
-- minute is DateTime64(0), not DateTime: events.ts is a DateTime64 (years 1900 to
-- 2299) and DateTime only holds 1970 to 2106, so an agent with a wrong clock would
-- be counted in a clamped minute (1970-01-01 00:00 or 2106-02-07 06:28). And
-- ClickHouse's Arrow output sends a DateTime as bare seconds, a DateTime64 as a
-- timestamp with its time zone.

CREATE TABLE IF NOT EXISTS ${database}.rollups_1m
(
    minute          DateTime64(0, 'UTC')        COMMENT 'Start of the minute (event time, UTC)',
    tenant_id       LowCardinality(String),
    agent_id        LowCardinality(String),
    model           LowCardinality(String)      COMMENT 'gen_ai.request.model; empty when the event has none',
    tool            LowCardinality(String)      COMMENT 'Tool name for tool_call events; empty for other kinds',
    kind            LowCardinality(String),
    events          SimpleAggregateFunction(sum, UInt64)  COMMENT 'Events in the minute',
    errors          SimpleAggregateFunction(sum, UInt64)  COMMENT 'Events with status = error',
    input_tokens    SimpleAggregateFunction(sum, UInt64)  COMMENT 'Sum of input_tokens (NULL counts 0)',
    output_tokens   SimpleAggregateFunction(sum, UInt64)  COMMENT 'Sum of output_tokens (NULL counts 0)',
    cost_usd        SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of cost_usd',
    unpriced        SimpleAggregateFunction(sum, UInt64)  COMMENT 'Events whose cost is unknown (priced = 0)',
    duration_ms_sum SimpleAggregateFunction(sum, Float64) COMMENT 'Sum of duration_ms over events that report it',
    timed           SimpleAggregateFunction(sum, UInt64)  COMMENT 'Events that report duration_ms',
    latency_ms      AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64)
                                                COMMENT 'Latency digest: quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_ms)'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, agent_id, minute, model, tool, kind)
${rollups_ttl}
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.rollups_1m_mv TO ${database}.rollups_1m
AS SELECT
    -- Not toStartOfMinute(ts): it returns a DateTime (clamped to 1970..2106). An interval
    -- in milliseconds keeps a DateTime64 over the whole range of ts, rounding down
    -- (1969-12-31 23:59:30.5 -> 23:59:00); the CAST drops the zero milliseconds.
    CAST(toStartOfInterval(ts, INTERVAL 60000 MILLISECOND) AS DateTime64(0, 'UTC')) AS minute,
    tenant_id,
    agent_id,
    ifNull(model, '')                                         AS model,
    if(kind = 'tool_call', ifNull(name, ''), '')              AS tool,
    kind,
    toUInt64(count())                                         AS events,
    toUInt64(countIf(status = 'error'))                       AS errors,
    toUInt64(sum(ifNull(input_tokens, 0)))                    AS input_tokens,
    toUInt64(sum(ifNull(output_tokens, 0)))                   AS output_tokens,
    sum(cost_usd)                                             AS cost_usd,
    toUInt64(countIf(priced = 0))                             AS unpriced,
    sum(ifNull(duration_ms, 0))                               AS duration_ms_sum,
    toUInt64(count(duration_ms))                              AS timed,
    quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(assumeNotNull(duration_ms), isNotNull(duration_ms))
                                                              AS latency_ms
FROM ${database}.events
GROUP BY minute, tenant_id, agent_id, model, tool, kind;
