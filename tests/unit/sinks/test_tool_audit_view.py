"""The tool_call_audit view (migration 4) on chDB: every tool call, allowed or not, from the
events and the tool_policy alerts that the detector really produced."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.schemas import Event, EventKind
from agentwatch.sinks import SAVED_QUERIES, ChdbBackend, ClickHouseSink, SchemaConfig, migrate

T0 = datetime(2026, 11, 20, 9, 0, 1, 250_001, tzinfo=UTC)
POLICY = {"type": "tool_policy", "policies": [
    {"agents": ["retail-*"], "allow": ["purchase_history", "draft_*"]}]}


def _event(i: int, session: str, kind: str, name: str | None = None,
           agent: str = "retail-concierge") -> Event:
    fields: dict[str, Any] = {"name": name} if name is not None else {}
    return Event(event_id=str(uuid.UUID(int=i + 1)), ts=T0 + timedelta(seconds=i),
                 agent_id=agent, session_id=session, kind=EventKind(kind), **fields)


@pytest.fixture
def database(backend: ChdbBackend) -> str:
    name = f"aw_audit_{uuid.uuid4().hex[:12]}"
    migrate(backend, SchemaConfig(database=name, ttl_days=None))
    return name


def test_calls_outside_the_policy_are_not_allowed_and_the_rest_are(
    backend: ChdbBackend, database: str
) -> None:
    events = [
        _event(0, "s-1", "tool_call", "purchase_history"),
        _event(1, "s-1", "tool_call", "issue_refund"),
        _event(2, "s-1", "tool_call", "draft_email"),
        _event(3, "s-1", "tool_call", "issue_refund"),  # again: also not allowed
        _event(4, "s-1", "llm_call"),                    # not a tool call: no row
        _event(5, "s-1", "session_end"),
        _event(6, "s-2", "tool_call", "issue_refund", agent="campaign-optimizer"),  # no policy
        _event(7, "s-3", "tool_call", "purchase_history"),
        _event(8, "s-3", "tool_call", "drop_table"),
    ]
    rules = rules_from_mapping({"rules": {"policy": POLICY}})
    alerts = Engine(rules).process_many(events)
    assert [(a.key, a.state.value) for a in alerts] == [
        ("s-1", "firing"), ("s-1", "resolved"), ("s-3", "firing")]
    sink = ClickHouseSink(backend, database=database)
    sink.add_events(events)
    sink.add_alerts(alerts)
    sink.flush()
    rows = backend.query(
        f"SELECT session_id, tool, agent_id, allowed, policy_rule, alert_id = '' "
        f"FROM {database}.tool_call_audit ORDER BY ts").rows
    assert rows == [
        ("s-1", "purchase_history", "retail-concierge", 1, "", True),
        ("s-1", "issue_refund", "retail-concierge", 0, "policy", False),
        ("s-1", "draft_email", "retail-concierge", 1, "", True),
        ("s-1", "issue_refund", "retail-concierge", 0, "policy", False),
        ("s-2", "issue_refund", "campaign-optimizer", 1, "", True),
        ("s-3", "purchase_history", "retail-concierge", 1, "", True),
        ("s-3", "drop_table", "retail-concierge", 0, "policy", False),
    ]
    # the saved query runs on it
    result = backend.query(SAVED_QUERIES["tool-audit"].sql(database), {"limit": 3})
    assert [r[4] for r in result.rows] == ["drop_table", "purchase_history", "issue_refund"]


def test_without_tool_policy_alerts_every_call_is_allowed(
    backend: ChdbBackend, database: str
) -> None:
    events = [_event(i, "s-9", "tool_call", f"tool{i}") for i in range(3)]
    sink = ClickHouseSink(backend, database=database)
    sink.add_events(events)
    sink.flush()
    rows = backend.query(f"SELECT allowed FROM {database}.tool_call_audit").rows
    assert rows == [(1,), (1,), (1,)]
