-- Migration 5: acknowledgements (issue 18): who took an alert, and when.
--
-- Template fields: database, alerts_read and acks_read (the tables the view reads;
-- on a sharded cluster the Distributed *_all tables).
--
-- One row per acknowledgement as written to the acks topic (`agentwatch alerts ack`,
-- the dispatcher's signed link) or by the embedded pipeline. An alert acknowledged
-- twice has two rows; the view keeps the first.

CREATE TABLE IF NOT EXISTS ${database}.alert_acks
(
    alert_id    String                  COMMENT 'alerts.alert_id of the acknowledged alert',
    acked_by    String                  COMMENT 'Who took it (agentwatch alerts ack --by, or the name typed on the ack page)',
    acked_at    DateTime64(6, 'UTC')    COMMENT 'When (wall clock of whoever acknowledged)',
    via         LowCardinality(String)  COMMENT 'cli, link:<endpoint> or api',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (alert_id, acked_at)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every alert once, in its latest state, with its first acknowledgement (NULL while
-- nobody acknowledged it). Filter on tenant_id and fired_at.
CREATE VIEW IF NOT EXISTS ${database}.alert_status
AS SELECT
    a.alert_id                                           AS alert_id,
    a.rule                                               AS rule,
    a.type                                               AS type,
    a.severity                                           AS severity,
    a.scope                                              AS scope,
    a.key                                                AS key,
    a.tenant_id                                          AS tenant_id,
    a.agent_id                                           AS agent_id,
    a.session_id                                         AS session_id,
    a.last_state                                         AS state,
    a.fired_at                                           AS fired_at,
    a.resolved_at                                        AS resolved_at,
    a.reason                                             AS reason,
    k.first_by                                           AS acked_by,
    k.first_at                                           AS acked_at
FROM
(
    SELECT
        alert_id,
        argMax(rule, (ts, state = 'resolved'))           AS rule,
        argMax(type, (ts, state = 'resolved'))           AS type,
        argMax(severity, (ts, state = 'resolved'))       AS severity,
        argMax(scope, (ts, state = 'resolved'))          AS scope,
        argMax(key, (ts, state = 'resolved'))            AS key,
        argMax(tenant_id, (ts, state = 'resolved'))      AS tenant_id,
        argMax(agent_id, (ts, state = 'resolved'))       AS agent_id,
        argMax(session_id, (ts, state = 'resolved'))     AS session_id,
        argMax(state, (ts, state = 'resolved'))          AS last_state,
        minIfOrNull(ts, state = 'firing')                AS fired_at,
        maxIfOrNull(ts, state = 'resolved')              AS resolved_at,
        argMin(reason, (state != 'firing', ts))          AS reason
    FROM ${alerts_read}
    GROUP BY alert_id
) AS a
LEFT JOIN
(
    SELECT
        alert_id,
        CAST(argMin(acked_by, acked_at) AS Nullable(String))              AS first_by,
        CAST(min(acked_at) AS Nullable(DateTime64(6, 'UTC')))             AS first_at
    FROM ${acks_read}
    GROUP BY alert_id
) AS k ON a.alert_id = k.alert_id
SETTINGS join_use_nulls = 1;
