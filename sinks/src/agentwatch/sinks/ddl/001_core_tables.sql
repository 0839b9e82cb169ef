-- Migration 1: raw events, alerts and dead letters.
--
-- Template fields, filled in by agentwatch before it runs the file: database,
-- events_ttl and dead_letters_ttl (a TTL clause, or nothing when retention is
-- unlimited). Statements end with ';' at the end of a line. Column order is the
-- contract of agentwatch.sinks._rows: Arrow batches are built in exactly this order
-- (ingested_at is left to its DEFAULT).
--
-- Conventions (why the types are what they are):
-- * LowCardinality(String) for the columns with few distinct values that BI tools
--   group by (tenant, agent, kind, status, model, provider, tool/step name): they
--   are stored as dictionary codes, which makes GROUP BY and filters cheap.
-- * Optional fields of the event contract are Nullable: NULL ("not reported") and
--   0 / '' are different answers (avg(input_tokens) must skip calls that did not
--   report tokens). cost_usd is the one exception, see below.
-- * Every table: SETTINGS non_replicated_deduplication_window, so a batch retried
--   with the same insert_deduplication_token is stored once (on chDB and on a
--   single server; Replicated* engines deduplicate by default).

CREATE TABLE IF NOT EXISTS ${database}.events
(
    event_id            String                      COMMENT 'UUID of the event, as sent (String: joins with alerts.event_ids without casts)',
    ts                  DateTime64(6, 'UTC')        COMMENT 'Event time, microseconds, UTC',
    tenant_id           LowCardinality(String)      COMMENT 'Tenant (default: default)',
    agent_id            LowCardinality(String)      COMMENT 'gen_ai.agent.id',
    session_id          String                      COMMENT 'gen_ai.conversation.id',
    kind                LowCardinality(String)      COMMENT 'llm_call, tool_call, agent_step, session_start, session_end, handoff, guardrail, custom, score',
    schema_version      UInt8                       COMMENT 'Event contract version',
    trace_id            Nullable(String),
    span_id             Nullable(String),
    parent_span_id      Nullable(String),
    name                LowCardinality(Nullable(String)) COMMENT 'Tool name (gen_ai.tool.name) for tool_call; step or operation name otherwise',
    status              LowCardinality(String)      COMMENT 'ok or error',
    error_type          LowCardinality(Nullable(String)) COMMENT 'error.type when status = error',
    model               LowCardinality(Nullable(String)) COMMENT 'gen_ai.request.model',
    provider            LowCardinality(Nullable(String)) COMMENT 'gen_ai.system',
    input_tokens        Nullable(UInt64)            COMMENT 'gen_ai.usage.input_tokens',
    output_tokens       Nullable(UInt64)            COMMENT 'gen_ai.usage.output_tokens',
    cached_input_tokens Nullable(UInt64),
    reasoning_tokens    Nullable(UInt64),
    -- Not Nullable: cost is summed by every dashboard and rollup; an event with no
    -- known cost counts 0 and says so in `priced`.
    cost_usd            Float64                     COMMENT 'Cost in USD; 0 when unknown (see priced)',
    priced              UInt8                       COMMENT '1 when cost_usd is known (sent or computed from the price table), 0 when not',
    duration_ms         Nullable(Float64),
    tool_args_hash      Nullable(String)            COMMENT 'Stable hash of the tool arguments (raw arguments are not sent)',
    -- Map(String, String): attributes['key'] works in every BI tool. Values are
    -- text: strings as sent, booleans as true/false, numbers in their shortest
    -- round-trip form (42, 0.25); toFloat64OrNull(attributes['k']) reads them back.
    attributes          Map(LowCardinality(String), String) COMMENT 'Free-form scalar attributes, values as text',
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When the sink wrote the row',
    INDEX idx_session_id session_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (tenant_id, agent_id, ts)
${events_ttl}
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS ${database}.alerts
(
    alert_id        String                      COMMENT 'Stable id of the alert episode; firing and resolution share it',
    rule            LowCardinality(String)      COMMENT 'Rule name in the rules file',
    type            LowCardinality(String)      COMMENT 'cost, error_rate, runaway_loop, budget, latency or score',
    state           LowCardinality(String)      COMMENT 'firing or resolved',
    severity        LowCardinality(String)      COMMENT 'info, warning or critical',
    scope           LowCardinality(String)      COMMENT 'session, agent or tenant',
    key             String                      COMMENT 'The scoped entity: session, agent or tenant id',
    tenant_id       LowCardinality(String),
    agent_id        LowCardinality(Nullable(String)) COMMENT 'Set when scoped to one agent or session',
    session_id      Nullable(String)            COMMENT 'Set when scoped to one session',
    value           Float64                     COMMENT 'Measured value (USD, error share, repeat or step count)',
    threshold       Float64,
    window_s        Nullable(UInt32)            COMMENT 'Window length in seconds; NULL for whole-session rules',
    ts              DateTime64(6, 'UTC')        COMMENT 'Event time at which the state changed',
    reason          String                      COMMENT 'One human sentence',
    event_ids       Array(String)               COMMENT 'A sample of contributing events (events.event_id)',
    delivery_status LowCardinality(String) DEFAULT '' COMMENT 'Webhook delivery outcome; empty until known',
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS ${database}.dead_letters
(
    received_at DateTime64(6, 'UTC')  COMMENT 'When the sink received the input',
    source      String                COMMENT 'Where it came from: topic/partition/offset, file:line, ...',
    reason      String                COMMENT 'Why it was rejected (field and rule)',
    raw         String                COMMENT 'The input bytes, unchanged'
)
ENGINE = MergeTree
PARTITION BY toDate(received_at)
ORDER BY received_at
${dead_letters_ttl}
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
