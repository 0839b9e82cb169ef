"""The Grafana "agentwatch session trace" dashboard, checked without Grafana: its panels
hold the session trace SQL that ``agentwatch session`` runs (one text, the session
variable in place of the query parameter), and every query, with the variable and the
plugin's macros expanded as Grafana and the plugin expand them, runs on chDB against a
freshly migrated database and returns the seeded session's rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_docker_compose import DASHBOARD_FILE as OVERVIEW_FILE
from test_docker_compose import DATASOURCE_FILE, FORMAT_OF_PANEL, PLUGIN, expand

from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    Event,
    EventKind,
    EventStatus,
    Severity,
)
from agentwatch.sinks import Backend, ClickHouseSink, migrate, open_backend
from agentwatch.sinks._session import (
    SESSION_ALERTS_SQL,
    SESSION_PARAMETER,
    SESSION_SPANS_SQL,
    SPAN_COLUMNS,
    session_sql,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "dashboards" / "session-trace.json"
VARIABLE = "${session:sqlstring}"
#: the plugin's format numbers (sqlds): 3 is the trace frame
FORMATS = {**FORMAT_OF_PANEL, "traces": 3}
SESSION = "o'brien-run-1"  # a quote, as Grafana's sqlstring format must escape it
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = {"agent": "a1a1a1a1a1a1a1a1", "chat": "b2b2b2b2b2b2b2b2", "tool": "c3c3c3c3c3c3c3c3"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in dashboard["panels"]}


def sqlstring(value: str) -> str:
    """Grafana's ``${var:sqlstring}``: the value quoted, each ``'`` doubled."""
    return "'" + value.replace("'", "''") + "'"


def with_session(sql: str, session: str = SESSION) -> str:
    return expand(sql.replace(VARIABLE, sqlstring(session)), None)


def test_the_dashboard_has_a_trace_panel_and_a_session_variable(
    dashboard: dict[str, Any],
) -> None:
    datasource_uid = "agentwatch-clickhouse"
    assert datasource_uid in DATASOURCE_FILE.read_text(encoding="utf-8")
    assert dashboard["uid"] == "agentwatch-session-trace"
    by_title = panels(dashboard)
    assert {title: p["type"] for title, p in by_title.items()} == {
        "Session": "stat", "Session path": "traces", "Alerts raised": "table",
        "Events": "table"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": PLUGIN, "uid": datasource_uid}
        (target,) = panel["targets"]
        assert target["datasource"] == {"type": PLUGIN, "uid": datasource_uid}
        assert target["editorType"] == "sql"
        assert target["format"] == FORMATS[panel["type"]], panel["title"]
        assert VARIABLE in target["rawSql"], panel["title"]
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["multi"], variable["includeAll"]) == (
        "session", "query", False, False)
    assert variable["datasource"]["uid"] == datasource_uid


def test_the_panels_hold_the_sql_of_agentwatch_session(dashboard: dict[str, Any]) -> None:
    by_title = panels(dashboard)
    for title, sql in (("Session path", SESSION_SPANS_SQL), ("Alerts raised", SESSION_ALERTS_SQL)):
        expected = session_sql(sql, "agentwatch", quote=False).replace(SESSION_PARAMETER, VARIABLE)
        assert by_title[title]["targets"][0]["rawSql"] == expected, title


def seed() -> tuple[list[Event], list[Alert]]:
    """A session with an agent step over a chat and a failing tool (stored twice: an
    at-least-once retry), a cost alert that fired and resolved, and another session."""
    t0 = NOW - timedelta(minutes=30)

    def event(kind: EventKind, span: str, parent: str | None, seconds: float,
              duration_ms: float, **fields: Any) -> Event:
        return Event(event_id=str(uuid.uuid4()), ts=t0 + timedelta(seconds=seconds),
                     tenant_id="acme", agent_id="concierge", session_id=SESSION, kind=kind,
                     trace_id="f" * 32, span_id=span, parent_span_id=parent,
                     duration_ms=duration_ms, **fields)

    chat = event(EventKind.LLM_CALL, SPAN["chat"], SPAN["agent"], 2.0, 1500.0, name="chat",
                 model="gpt-4o", input_tokens=1200, output_tokens=85, cost_usd=0.75)
    tool = event(EventKind.TOOL_CALL, SPAN["tool"], SPAN["agent"], 3.0, 500.0, name="search",
                 status=EventStatus.ERROR, error_type="TimeoutError",
                 attributes={"gen_ai.tool.call.id": "call-1"})
    agent = event(EventKind.AGENT_STEP, SPAN["agent"], None, 3.5, 3500.0, name="concierge")
    other = agent.model_copy(update={"event_id": str(uuid.uuid4()), "session_id": "other"})
    firing = Alert(
        alert_id=str(uuid.uuid4()), rule="session_cost", type=AlertType.COST,
        state=AlertState.FIRING, severity=Severity.WARNING, scope=AlertScope.SESSION,
        key=SESSION, tenant_id="acme", agent_id="concierge", session_id=SESSION, value=1.5,
        threshold=1.0, window_s=60, ts=t0 + timedelta(seconds=2),
        reason="Session spent 1.50 USD in 60 s.", event_ids=[chat.event_id])
    resolved = firing.model_copy(update={"state": AlertState.RESOLVED,
                                         "ts": t0 + timedelta(seconds=90)})
    return [chat, tool, agent, other, tool], [firing, resolved]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with open_backend(tmp_path_factory.mktemp("session-trace") / "db") as backend:
        migrate(backend)
        sink = ClickHouseSink(backend)
        events, alerts = seed()
        sink.add_events(events[:4])
        sink.add_events(events[4:])  # the retried tool call: another insert
        sink.add_alerts(alerts)
        sink.flush()
        yield backend


def run(backend: Backend, dashboard: dict[str, Any], title: str,
        session: str = SESSION) -> list[dict[str, Any]]:
    result = backend.query(with_session(panels(dashboard)[title]["targets"][0]["rawSql"],
                                        session))
    return [dict(zip(result.column_names, row, strict=True)) for row in result.rows]


def test_the_trace_panel_returns_the_trace_frame_of_the_session(
    backend: Backend, dashboard: dict[str, Any]
) -> None:
    rows = run(backend, dashboard, "Session path")
    assert tuple(rows[0]) == SPAN_COLUMNS
    # one row per event (the retried tool call once), in start order
    assert [(r["spanID"], r["parentSpanID"], r["operationName"]) for r in rows] == [
        (SPAN["agent"], "", "agent_step concierge"),
        (SPAN["chat"], SPAN["agent"], "llm_call chat"),
        (SPAN["tool"], SPAN["agent"], "tool_call search"),
    ]
    agent, chat, tool = rows
    assert {r["traceID"] for r in rows} == {SESSION}
    assert {r["serviceName"] for r in rows} == {"concierge"}
    assert chat["duration"] == 1500.0
    assert chat["startTime"] + chat["duration"] == chat["ts"].timestamp() * 1000
    assert agent["startTime"] < chat["startTime"] < tool["startTime"]
    tags = {t["key"]: t["value"] for t in chat["tags"]}
    assert (tags["model"], tags["cost_usd"], tags["input_tokens"]) == ("gpt-4o", "0.75", "1200")
    assert (tool["statusCode"], tool["statusMessage"]) == (2, "TimeoutError")
    assert {t["key"]: t["value"] for t in tool["tags"]}["gen_ai.tool.call.id"] == "call-1"
    assert agent["serviceTags"] == [{"key": "tenant_id", "value": "acme"}]


def test_the_alerts_panel_returns_what_the_session_raised(
    backend: Backend, dashboard: dict[str, Any]
) -> None:
    rows = run(backend, dashboard, "Alerts raised")
    assert [(r["state"], r["rule"]) for r in rows] == [
        ("firing", "session_cost"), ("resolved", "session_cost")]


def test_the_summary_and_events_panels_count_the_session(
    backend: Backend, dashboard: dict[str, Any]
) -> None:
    (summary,) = run(backend, dashboard, "Session")
    assert (summary["cost_usd"], summary["llm_calls"], summary["tool_calls"],
            summary["errors"]) == (0.75, 1, 1, 1)
    assert summary["duration_s"] == 3.5  # the agent step's start to the last end
    events = run(backend, dashboard, "Events")
    assert [e["kind"] for e in events] == ["llm_call", "tool_call", "agent_step"]


def test_another_session_shows_none_of_these_rows(
    backend: Backend, dashboard: dict[str, Any]
) -> None:
    assert [r["traceID"] for r in run(backend, dashboard, "Session path", "other")] == ["other"]
    assert run(backend, dashboard, "Alerts raised", "other") == []
    assert run(backend, dashboard, "Session path", "' OR 1=1 --") == []


def test_the_session_variable_lists_the_sessions_of_the_time_range(
    backend: Backend, dashboard: dict[str, Any]
) -> None:
    (variable,) = dashboard["templating"]["list"]
    rows = backend.query(expand(variable["query"], None)).rows
    assert sorted(rows) == sorted([(SESSION,), ("other",)])


def test_the_overview_links_its_sessions_to_this_dashboard(dashboard: dict[str, Any]) -> None:
    overview = json.loads(OVERVIEW_FILE.read_text(encoding="utf-8"))
    (variable,) = dashboard["templating"]["list"]
    linked = []
    for panel in overview["panels"]:
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] != "links":
                    continue
                column = override["matcher"]["options"]
                assert column in panel["targets"][0]["rawSql"], panel["title"]
                (link,) = prop["value"]
                assert link["url"].startswith(
                    f"/d/{dashboard['uid']}?var-{variable['name']}=${{__value.raw")
                linked.append((panel["title"], column))
    assert sorted(linked) == [("Runaway-loop incidents", "session_id"),
                              ("Top sessions by cost", "session_id")]
