"""One session's path: its events as spans, and the alerts it raised.

The SQL here is the one source of the session trace view: ``agentwatch session ID``
runs it with the query parameter ``{session:String}``, and the Grafana dashboard
``deploy/grafana/dashboards/session-trace.json`` holds the same text with
``${session:sqlstring}`` (Grafana's quoting of the ``session`` variable) in its place,
which a test checks.

The span rows have the columns of Grafana's trace data frame (``traceID``, ``spanID``,
``parentSpanID``, ``serviceName``, ``operationName``, ``startTime`` and ``duration`` in
ms, ``tags``, ``serviceTags``, ``statusCode``, ``statusMessage``) followed by the event's
own fields. The whole session is one trace (``traceID`` is the session id, the event's
OTel trace id is a tag): a session can span several traces. ``spanID`` is the event's
span id, or its event id when it has none; a ``session_end`` event shares the session's
span id with its ``session_start``, so it becomes a child of it: a zero-length mark at
its time (its ``duration_ms`` column keeps the session's length). ``startTime`` is the
event time less its duration (``ts`` is when a call ended). An
event stored twice (an at-least-once retry) shows once.
"""

from __future__ import annotations

import string
from typing import Final

from agentwatch.sinks._identifiers import quote_identifier

__all__ = [
    "SESSION_ALERTS_SQL",
    "SESSION_PARAMETER",
    "SESSION_SPANS_SQL",
    "SPAN_COLUMNS",
    "session_sql",
]

#: How the SQL below names the session (a ClickHouse query parameter).
SESSION_PARAMETER: Final = "{session:String}"

SESSION_SPANS_SQL: Final = """\
SELECT
    e.session_id                                                       AS traceID,
    if(e.kind = 'session_end', e.event_id, ifNull(e.span_id, e.event_id)) AS spanID,
    if(e.kind = 'session_end', ifNull(e.span_id, ''), ifNull(e.parent_span_id, ''))
                                                                       AS parentSpanID,
    e.agent_id                                                         AS serviceName,
    concat(e.kind, ifNull(concat(' ', e.name), ''))                   AS operationName,
    toUnixTimestamp64Micro(e.ts) / 1000 - duration                     AS startTime,
    if(e.kind = 'session_end', 0, ifNull(e.duration_ms, 0))            AS duration,
    arrayConcat(
        arrayFilter(t -> t['value'] != '', [
            map('key', 'kind', 'value', toString(e.kind)),
            map('key', 'status', 'value', toString(e.status)),
            map('key', 'error.type', 'value', ifNull(toString(e.error_type), '')),
            map('key', 'model', 'value', ifNull(toString(e.model), '')),
            map('key', 'provider', 'value', ifNull(toString(e.provider), '')),
            map('key', 'cost_usd', 'value', if(e.priced = 1, toString(e.cost_usd), '')),
            map('key', 'input_tokens', 'value', ifNull(toString(e.input_tokens), '')),
            map('key', 'output_tokens', 'value', ifNull(toString(e.output_tokens), '')),
            map('key', 'tool_args_hash', 'value', ifNull(e.tool_args_hash, '')),
            map('key', 'trace_id', 'value', ifNull(e.trace_id, '')),
            map('key', 'event_id', 'value', e.event_id)
        ]),
        arrayMap(k -> map('key', toString(k), 'value', e.attributes[k]), mapKeys(e.attributes))
    )                                                                  AS tags,
    [map('key', 'tenant_id', 'value', toString(e.tenant_id))]          AS serviceTags,
    if(e.status = 'error', 2, 0)                                       AS statusCode,
    ifNull(toString(e.error_type), '')                                 AS statusMessage,
    e.event_id                                                         AS event_id,
    e.ts                                                               AS ts,
    e.tenant_id                                                        AS tenant_id,
    e.kind                                                             AS kind,
    e.name                                                             AS name,
    e.status                                                           AS status,
    e.error_type                                                       AS error_type,
    e.model                                                            AS model,
    e.input_tokens                                                     AS input_tokens,
    e.output_tokens                                                    AS output_tokens,
    if(e.priced = 1, e.cost_usd, NULL)                                 AS cost_usd,
    e.duration_ms                                                      AS duration_ms
FROM ${database}.events AS e
WHERE e.session_id = {session:String}
ORDER BY startTime, e.ts, e.event_id
LIMIT 1 BY e.event_id"""

#: The columns of a span row, in order.
SPAN_COLUMNS: Final = (
    "traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime",
    "duration", "tags", "serviceTags", "statusCode", "statusMessage", "event_id", "ts",
    "tenant_id", "kind", "name", "status", "error_type", "model", "input_tokens",
    "output_tokens", "cost_usd", "duration_ms",
)  # fmt: skip

#: Every state change of the alerts scoped to the session (or naming it), oldest first.
SESSION_ALERTS_SQL: Final = """\
SELECT
    a.ts                                   AS ts,
    a.state                                AS state,
    a.rule                                 AS rule,
    a.type                                 AS type,
    a.severity                             AS severity,
    a.value                                AS value,
    a.threshold                            AS threshold,
    a.reason                               AS reason,
    a.alert_id                             AS alert_id,
    a.event_ids                            AS event_ids
FROM ${database}.alerts AS a
WHERE a.session_id = {session:String}
ORDER BY a.ts, a.state = 'resolved', a.alert_id
LIMIT 1 BY a.alert_id, a.state"""


def session_sql(sql: str, database: str, *, quote: bool = True) -> str:
    """``sql`` (one of the above) for ``database``; ``quote=False`` writes the database
    name bare, as the Grafana dashboards do (it is checked as a plain identifier)."""
    name = quote_identifier(database) if quote else quote_identifier(database).strip("`")
    return string.Template(sql).substitute(database=name)
