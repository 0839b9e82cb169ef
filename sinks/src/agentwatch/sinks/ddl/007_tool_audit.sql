-- Migration 7: the tool-call audit (issue 17): who called which tool, when, and whether
-- the tool policy allowed it. Template fields as in 003_bi_views.sql.
--
-- One row per tool_call event. allowed = 0 when a tool_policy alert of the session names
-- a call of the same tool: a policy's verdict depends only on the agent and the tool, so
-- every call of that tool in that session was outside the policy, and the alert's
-- event_ids hold the first call of each tool outside the policy in its session. Without
-- a tool_policy rule (or with no violation) every row has allowed = 1.
--
-- Columns are a contract, as for the views of migration 3. Filter on ts, tenant_id,
-- agent_id: ClickHouse pushes those filters into the events read.
CREATE VIEW IF NOT EXISTS ${database}.tool_call_audit
AS SELECT
    e.ts                                   AS ts,
    e.tenant_id                            AS tenant_id,
    e.agent_id                             AS agent_id,
    e.session_id                           AS session_id,
    ifNull(e.name, '')                     AS tool,
    e.status                               AS status,
    toUInt8(v.rule = '')                   AS allowed,
    v.rule                                 AS policy_rule,
    v.alert_id                             AS alert_id,
    e.event_id                             AS event_id
FROM ${events_read} AS e
LEFT JOIN
(
    SELECT
        c.tenant_id                        AS tenant_id,
        c.session_id                       AS session_id,
        ifNull(c.name, '')                 AS tool,
        min(a.rule)                        AS rule,
        min(a.alert_id)                    AS alert_id
    FROM ${events_read} AS c
    INNER JOIN
    (
        SELECT DISTINCT tenant_id, rule, alert_id, arrayJoin(event_ids) AS event_id
        FROM ${alerts_read}
        WHERE type = 'tool_policy'
    ) AS a ON c.tenant_id = a.tenant_id AND c.event_id = a.event_id
    WHERE c.kind = 'tool_call'
    GROUP BY tenant_id, session_id, tool
) AS v
    ON e.tenant_id = v.tenant_id AND e.session_id = v.session_id
   AND ifNull(e.name, '') = v.tool
WHERE e.kind = 'tool_call';
