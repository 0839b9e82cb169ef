"""The BI views' documented columns, and the saved queries over them.

``agentwatch query --saved NAME`` runs :data:`SAVED_QUERIES` ``[NAME]``; the README's
schema section and a test that compares every view's real columns (``DESCRIBE``)
with :attr:`SavedQuery.columns` keep the documentation honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.sinks._identifiers import quote_identifier

__all__ = ["SAVED_QUERIES", "SavedQuery", "saved_query"]


@dataclass(frozen=True, slots=True)
class SavedQuery:
    name: str  # the --saved name
    view: str  # the view it reads
    description: str
    order_by: str  # columns of the view, newest / largest first
    columns: tuple[tuple[str, str], ...]  # (column, what it holds), in view order

    def sql(self, database: str) -> str:
        """``SELECT *`` from the view, ordered, with a ``{limit:UInt64}`` parameter."""
        table = f"{quote_identifier(database)}.{quote_identifier(self.view)}"
        return f"SELECT * FROM {table} ORDER BY {self.order_by} LIMIT {{limit:UInt64}}"  # noqa: S608 (checked identifiers)


_TENANT: Final = ("tenant_id", "Tenant")
_AGENT: Final = ("agent_id", "Agent (gen_ai.agent.id)")

SAVED_QUERIES: Final[dict[str, SavedQuery]] = {
    q.name: q
    for q in (
        SavedQuery(
            "cost-by-agent",
            "cost_per_agent_hourly",
            "Cost, tokens and calls per agent per hour (from rollups_1m)",
            "hour DESC, cost_usd DESC",
            (
                ("hour", "Start of the hour, UTC"),
                _TENANT,
                _AGENT,
                ("events", "Events in the hour"),
                ("llm_calls", "llm_call events"),
                ("errors", "Events with status = error"),
                ("input_tokens", "Sum of input tokens"),
                ("output_tokens", "Sum of output tokens"),
                ("cost_usd", "Sum of cost in USD"),
                ("unpriced_events", "Events whose cost is unknown (counted as 0 USD)"),
            ),
        ),
        SavedQuery(
            "error-rate",
            "error_rate_per_agent_5m",
            "Share of failed llm_call and tool_call events per agent per 5 minutes",
            "bucket DESC, error_rate DESC",
            (
                ("bucket", "Start of the 5-minute bucket, UTC"),
                _TENANT,
                _AGENT,
                ("calls", "llm_call and tool_call events"),
                ("errors", "Of those, status = error"),
                ("error_rate", "errors / calls, 0 to 1"),
            ),
        ),
        SavedQuery(
            "top-sessions",
            "top_sessions_by_cost",
            "Sessions, most expensive first; one row per session and agent "
            "(a handoff gives one row per agent)",
            "cost_usd DESC",
            (
                _TENANT,
                _AGENT,
                ("session_id", "Session (gen_ai.conversation.id)"),
                ("started_at", "First event time (of this agent in the session)"),
                ("last_event_at", "Last event time (of this agent in the session)"),
                ("events", "Events"),
                ("llm_calls", "llm_call events"),
                ("tool_calls", "tool_call events"),
                ("errors", "Events with status = error"),
                ("input_tokens", "Sum of input tokens"),
                ("output_tokens", "Sum of output tokens"),
                ("cost_usd", "Sum of cost in USD"),
            ),
        ),
        SavedQuery(
            "open-alerts",
            "open_alerts",
            "Alerts that are firing now (latest state change is firing)",
            "fired_at DESC",
            (
                ("alert_id", "Stable id of the alert episode"),
                ("rule", "Rule name"),
                ("type", "cost, error_rate, runaway_loop, budget, latency, score, tool_policy "
                         "or guardrail"),
                ("severity", "info, warning or critical"),
                ("scope", "session, agent or tenant"),
                ("key", "The scoped entity's id"),
                _TENANT,
                ("agent_id", "Agent, when scoped to one agent or session"),
                ("session_id", "Session, when scoped to one"),
                ("value", "Measured value when it fired"),
                ("threshold", "The rule's threshold"),
                ("window_s", "Window length in seconds (NULL: whole session)"),
                ("fired_at", "Event time at which it fired"),
                ("reason", "One human sentence"),
                ("event_ids", "A sample of contributing events"),
            ),
        ),
        SavedQuery(
            "loop-incidents",
            "loop_incidents",
            "Runaway-loop alerts, open or resolved, one row each",
            "fired_at DESC",
            (
                ("alert_id", "Stable id of the alert episode"),
                ("rule", "Rule name (runaway loop: repeat or steps)"),
                _TENANT,
                _AGENT,
                ("session_id", "The looping session"),
                ("key", "The scoped entity's id"),
                (
                    "fired_at",
                    "Event time at which it fired (NULL when only the resolution was stored)",
                ),
                ("resolved_at", "Event time at which it resolved (NULL: open)"),
                ("status", "open or resolved"),
                ("value", "Highest measured value (repeats or steps)"),
                ("threshold", "The rule's threshold"),
                ("reason", "The firing's sentence (the resolution's when only it was stored)"),
                ("event_ids", "A sample of the looping events (from the firing, as for reason)"),
            ),
        ),
        SavedQuery(
            "scores",
            "scores",
            "Evaluation scores (events of kind score), one row each",
            "ts DESC",
            (
                ("ts", "Event time of the score"),
                _TENANT,
                _AGENT,
                ("session_id", "The scored session"),
                ("evaluation", "gen_ai.evaluation.name"),
                ("value", "gen_ai.evaluation.score.value (NULL: a label only)"),
                ("label", "gen_ai.evaluation.score.label"),
                ("source", "llm_judge, human or heuristic"),
                ("explanation", "gen_ai.evaluation.explanation"),
                ("response_id", "gen_ai.response.id of the scored response"),
                ("scored_span_id", "The scored span (the event's parent_span_id)"),
                ("trace_id", "Trace id"),
                ("event_id", "The score event's id"),
            ),
        ),
        SavedQuery(
            "scores-by-session",
            "scores_per_session",
            "Per session, agent and evaluation: the scores next to what the session cost",
            "last_scored_at DESC",
            (
                _TENANT,
                _AGENT,
                ("session_id", "Session (gen_ai.conversation.id)"),
                ("evaluation", "gen_ai.evaluation.name"),
                ("scores", "Score events"),
                ("mean_value", "Mean of the numeric scores (NULL: labels only)"),
                ("min_value", "Lowest numeric score"),
                ("last_scored_at", "Event time of the last score"),
                ("llm_calls", "llm_call events of the agent in the session"),
                ("cost_usd", "What the agent's events of the session cost, USD"),
            ),
        ),
        SavedQuery(
            "scores-by-agent",
            "scores_per_agent_hourly",
            "Per agent, hour and evaluation: the scores next to the agent's cost that hour",
            "hour DESC, mean_value",
            (
                ("hour", "Start of the hour, UTC"),
                _TENANT,
                _AGENT,
                ("evaluation", "gen_ai.evaluation.name"),
                ("scores", "Score events"),
                ("mean_value", "Mean of the numeric scores (NULL: labels only)"),
                ("min_value", "Lowest numeric score"),
                ("cost_usd", "The agent's cost in the hour, USD (from rollups_1m)"),
            ),
        ),
        SavedQuery(
            "tool-audit",
            "tool_call_audit",
            "Tool calls: who called which tool, when, and whether the tool policy allowed it",
            "ts DESC",
            (
                ("ts", "Event time of the call"),
                _TENANT,
                _AGENT,
                ("session_id", "Session (gen_ai.conversation.id)"),
                ("tool", "Tool name (gen_ai.tool.name)"),
                ("status", "ok or error"),
                ("allowed", "0 when a tool_policy alert of the session names this tool"),
                ("policy_rule", "That tool_policy rule ('' when allowed)"),
                ("alert_id", "That alert's id ('' when allowed)"),
                ("event_id", "The call's event id"),
            ),
        ),
    )
}


def saved_query(name: str) -> SavedQuery:
    try:
        return SAVED_QUERIES[name]
    except KeyError:
        names = ", ".join(SAVED_QUERIES)
        raise ConfigError(f"no saved query {name!r}: choose one of {names}") from None
