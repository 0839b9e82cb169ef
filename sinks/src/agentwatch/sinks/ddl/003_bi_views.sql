-- Migration 3: the stable views for BI tools (Grafana, Superset, Metabase, SQL).
--
-- Template fields, filled in by agentwatch before it runs the file: database;
-- events_read, rollups_read and alerts_read, the tables the views read
-- (database.events etc.; on a sharded cluster the Distributed tables
-- database.events_all etc.).
--
-- These columns are a contract: later migrations may add columns, never rename or
-- drop one (docs: README, "The ClickHouse schema"). Filter on the time and id
-- columns (hour, bucket, tenant_id, agent_id): ClickHouse pushes those filters
-- into the view before it aggregates.
--
-- hour and bucket are DateTime64(0, 'UTC'), like rollups_1m.minute: toStartOfHour and
-- toStartOfFiveMinutes would return a DateTime (clamped to 1970..2106, and sent by the
-- Arrow output as bare seconds). toStartOfInterval with an interval in milliseconds
-- stays DateTime64 over the whole range and is monotonic, so a filter on hour or
-- bucket still narrows the rollups_1m parts and granules read; the CAST drops the
-- zero milliseconds.

-- Cost per agent per hour, from rollups_1m.
CREATE VIEW IF NOT EXISTS ${database}.cost_per_agent_hourly
AS SELECT
    CAST(toStartOfInterval(r.minute, INTERVAL 3600000 MILLISECOND) AS DateTime64(0, 'UTC'))
                                           AS hour,
    r.tenant_id                            AS tenant_id,
    r.agent_id                             AS agent_id,
    sum(r.events)                          AS events,
    sumIf(r.events, r.kind = 'llm_call')   AS llm_calls,
    sum(r.errors)                          AS errors,
    sum(r.input_tokens)                    AS input_tokens,
    sum(r.output_tokens)                   AS output_tokens,
    sum(r.cost_usd)                        AS cost_usd,
    sum(r.unpriced)                        AS unpriced_events
FROM ${rollups_read} AS r
GROUP BY hour, tenant_id, agent_id;

-- Error rate per agent per 5 minutes: the share of llm_call and tool_call events
-- with status = error (what the default agent error-rate rule measures).
CREATE VIEW IF NOT EXISTS ${database}.error_rate_per_agent_5m
AS SELECT
    CAST(toStartOfInterval(r.minute, INTERVAL 300000 MILLISECOND) AS DateTime64(0, 'UTC'))
                                                                AS bucket,
    r.tenant_id                                                 AS tenant_id,
    r.agent_id                                                  AS agent_id,
    sumIf(r.events, r.kind IN ('llm_call', 'tool_call'))        AS calls,
    sumIf(r.errors, r.kind IN ('llm_call', 'tool_call'))        AS errors,
    errors / calls                                              AS error_rate
FROM ${rollups_read} AS r
GROUP BY bucket, tenant_id, agent_id
HAVING calls > 0;

-- One row per session and agent, most expensive first: a session handed off between
-- agents gives one row per agent.
CREATE VIEW IF NOT EXISTS ${database}.top_sessions_by_cost
AS SELECT
    e.tenant_id                            AS tenant_id,
    e.agent_id                             AS agent_id,
    e.session_id                           AS session_id,
    min(e.ts)                              AS started_at,
    max(e.ts)                              AS last_event_at,
    count()                                AS events,
    countIf(e.kind = 'llm_call')           AS llm_calls,
    countIf(e.kind = 'tool_call')          AS tool_calls,
    countIf(e.status = 'error')            AS errors,
    sum(ifNull(e.input_tokens, 0))         AS input_tokens,
    sum(ifNull(e.output_tokens, 0))        AS output_tokens,
    sum(e.cost_usd)                        AS cost_usd
FROM ${events_read} AS e
GROUP BY tenant_id, agent_id, session_id
ORDER BY cost_usd DESC;

-- Alerts whose latest state change is "firing" (a resolution at the same event
-- time as the firing counts as later).
CREATE VIEW IF NOT EXISTS ${database}.open_alerts
AS SELECT
    alert_id,
    rule,
    type,
    severity,
    scope,
    key,
    tenant_id,
    agent_id,
    session_id,
    value,
    threshold,
    window_s,
    ts                                     AS fired_at,
    reason,
    event_ids
FROM
(
    SELECT *
    FROM ${alerts_read}
    ORDER BY alert_id, ts DESC, state = 'resolved' DESC
    LIMIT 1 BY alert_id
)
WHERE state = 'firing';

-- Runaway-loop incidents: one row per loop alert, open or resolved. fired_at is NULL
-- when only the resolution was stored (its firing never reached the alerts table);
-- reason and event_ids are then the resolution's.
CREATE VIEW IF NOT EXISTS ${database}.loop_incidents
AS SELECT
    a.alert_id                                                   AS alert_id,
    any(a.rule)                                                  AS rule,
    any(a.tenant_id)                                             AS tenant_id,
    any(a.agent_id)                                              AS agent_id,
    any(a.session_id)                                            AS session_id,
    any(a.key)                                                   AS key,
    minIfOrNull(a.ts, a.state = 'firing')                        AS fired_at,
    maxIfOrNull(a.ts, a.state = 'resolved')                      AS resolved_at,
    if(resolved_at IS NULL, 'open', 'resolved')                  AS status,
    max(a.value)                                                 AS value,
    any(a.threshold)                                             AS threshold,
    -- the first firing's; without one, the first resolution's
    argMin(a.reason, (a.state != 'firing', a.ts))                AS reason,
    argMin(a.event_ids, (a.state != 'firing', a.ts))             AS event_ids
FROM ${alerts_read} AS a
WHERE a.type = 'runaway_loop'
GROUP BY alert_id;
