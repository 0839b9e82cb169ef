-- Migration 6: evaluation scores (events of kind 'score'), and scores next to costs.
--
-- Template fields as in migration 3: database, events_read, rollups_read.
--
-- A score event (README, "Evaluation scores") keeps its evaluation's name in `name`
-- and its result in attributes under OpenTelemetry's gen_ai.evaluation.result names;
-- these views give them columns. The column lists are a contract, as in migration 3.

-- One row per score.
CREATE VIEW IF NOT EXISTS ${database}.scores
AS SELECT
    e.ts                                                                AS ts,
    e.tenant_id                                                         AS tenant_id,
    e.agent_id                                                          AS agent_id,
    e.session_id                                                        AS session_id,
    e.name                                                              AS evaluation,
    toFloat64OrNull(e.attributes['gen_ai.evaluation.score.value'])      AS value,
    nullIf(e.attributes['gen_ai.evaluation.score.label'], '')           AS label,
    nullIf(e.attributes['agentwatch.evaluation.source'], '')            AS source,
    nullIf(e.attributes['gen_ai.evaluation.explanation'], '')           AS explanation,
    nullIf(e.attributes['gen_ai.response.id'], '')                      AS response_id,
    e.parent_span_id                                                    AS scored_span_id,
    e.trace_id                                                          AS trace_id,
    e.event_id                                                          AS event_id
FROM ${events_read} AS e
WHERE e.kind = 'score';

-- Per session, agent and evaluation: the scores and what the session cost (the agent's
-- events in the session; a session without scores has no row).
CREATE VIEW IF NOT EXISTS ${database}.scores_per_session
AS SELECT
    s.tenant_id                            AS tenant_id,
    s.agent_id                             AS agent_id,
    s.session_id                           AS session_id,
    s.evaluation                           AS evaluation,
    s.scores                               AS scores,
    s.mean_value                           AS mean_value,
    s.min_value                            AS min_value,
    s.last_scored_at                       AS last_scored_at,
    c.llm_calls                            AS llm_calls,
    c.cost_usd                             AS cost_usd
FROM
(
    SELECT
        e.tenant_id                                                          AS tenant_id,
        e.agent_id                                                           AS agent_id,
        e.session_id                                                         AS session_id,
        e.name                                                               AS evaluation,
        count()                                                              AS scores,
        avgOrNull(toFloat64OrNull(e.attributes['gen_ai.evaluation.score.value'])) AS mean_value,
        minOrNull(toFloat64OrNull(e.attributes['gen_ai.evaluation.score.value'])) AS min_value,
        max(e.ts)                                                            AS last_scored_at
    FROM ${events_read} AS e
    WHERE e.kind = 'score'
    GROUP BY tenant_id, agent_id, session_id, evaluation
) AS s
LEFT JOIN
(
    SELECT
        e.tenant_id                        AS tenant_id,
        e.agent_id                         AS agent_id,
        e.session_id                       AS session_id,
        countIf(e.kind = 'llm_call')       AS llm_calls,
        sum(e.cost_usd)                    AS cost_usd
    FROM ${events_read} AS e
    GROUP BY tenant_id, agent_id, session_id
) AS c
ON s.tenant_id = c.tenant_id AND s.agent_id = c.agent_id AND s.session_id = c.session_id;

-- Per agent, hour and evaluation: the scores and the agent's cost in that hour (from
-- rollups_1m).
CREATE VIEW IF NOT EXISTS ${database}.scores_per_agent_hourly
AS SELECT
    s.hour                                 AS hour,
    s.tenant_id                            AS tenant_id,
    s.agent_id                             AS agent_id,
    s.evaluation                           AS evaluation,
    s.scores                               AS scores,
    s.mean_value                           AS mean_value,
    s.min_value                            AS min_value,
    c.cost_usd                             AS cost_usd
FROM
(
    SELECT
        CAST(toStartOfInterval(e.ts, INTERVAL 3600000 MILLISECOND) AS DateTime64(0, 'UTC'))
                                                                             AS hour,
        e.tenant_id                                                          AS tenant_id,
        e.agent_id                                                           AS agent_id,
        e.name                                                               AS evaluation,
        count()                                                              AS scores,
        avgOrNull(toFloat64OrNull(e.attributes['gen_ai.evaluation.score.value'])) AS mean_value,
        minOrNull(toFloat64OrNull(e.attributes['gen_ai.evaluation.score.value'])) AS min_value
    FROM ${events_read} AS e
    WHERE e.kind = 'score'
    GROUP BY hour, tenant_id, agent_id, evaluation
) AS s
LEFT JOIN
(
    SELECT
        CAST(toStartOfInterval(r.minute, INTERVAL 3600000 MILLISECOND) AS DateTime64(0, 'UTC'))
                                           AS hour,
        r.tenant_id                        AS tenant_id,
        r.agent_id                         AS agent_id,
        sum(r.cost_usd)                    AS cost_usd
    FROM ${rollups_read} AS r
    GROUP BY hour, tenant_id, agent_id
) AS c
ON s.hour = c.hour AND s.tenant_id = c.tenant_id AND s.agent_id = c.agent_id;
