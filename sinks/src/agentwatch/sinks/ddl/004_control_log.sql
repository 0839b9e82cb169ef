-- Migration 4: control_log, the audit of every halt and resume (issue 18).
--
-- One row per control record on agentwatch.control (the sink consumes that topic; the
-- embedded pipeline writes its own): a halt or a resume of a tenant, an agent or a
-- session, by an alert's rule or an operator. Tombstones (compaction markers) are not
-- stored. What is halted now: the latest row per key whose action is 'halt'
-- (argMax(action, ts) = 'halt'), which `agentwatch control list` reads from Kafka.

CREATE TABLE IF NOT EXISTS ${database}.control_log
(
    ts          DateTime64(6, 'UTC')        COMMENT 'When: the alert''s event time, or the operator''s clock',
    action      LowCardinality(String)      COMMENT 'halt or resume',
    scope       LowCardinality(String)      COMMENT 'tenant, agent or session',
    key         String                      COMMENT 'The control topic key: tenant:T, agent:T/A or session:T/S',
    tenant_id   LowCardinality(String),
    agent_id    LowCardinality(Nullable(String)) COMMENT 'Set when the scope is an agent',
    session_id  Nullable(String)            COMMENT 'Set when the scope is a session',
    alert_id    Nullable(String)            COMMENT 'The alert that halted or resumed it (alerts.alert_id); NULL for an operator',
    reason      String                      COMMENT 'One human sentence',
    by          LowCardinality(String)      COMMENT 'The alert''s rule, or the operator''s name',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, key)
SETTINGS non_replicated_deduplication_window = 1000;
