"""`agentwatch session ID` on a real chDB store, seeded with the events of a real
OpenTelemetry SDK run (through ``AgentwatchSpanProcessor``) and of the producer's own
``session()`` helpers, plus the alerts the session raised."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import error_line, run
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from agentwatch.cli._session import build_tree, load_session
from agentwatch.producer.otel import AgentwatchSpanProcessor
from agentwatch.producer.testing import collector
from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Event, Severity
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, StoreSettings, migrate

SAFETY_TIMEOUT_S = 30.0
T0 = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
MS = 1_000_000


def otel_events() -> list[Event]:
    """conv-42 as an instrumented app traces it: an agent span over a chat, a tool and a
    failing tool (explicit times, so the tree's order is known)."""
    client = collector(agent_id="fallback", linger_ms=5)
    provider = TracerProvider(resource=Resource.create(
        {"service.name": "shop", "agentwatch.tenant.id": "acme"}))
    provider.add_span_processor(AgentwatchSpanProcessor(client))
    tracer = provider.get_tracer("test.session")
    common = {"gen_ai.conversation.id": "conv-42", "gen_ai.agent.id": "concierge"}
    agent = tracer.start_span("invoke_agent concierge", start_time=T0_NS, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "concierge", **common})
    parent = trace.set_span_in_context(agent)
    chat = tracer.start_span("chat gpt-4o", context=parent, start_time=T0_NS + 10 * MS,
                             attributes={"gen_ai.operation.name": "chat",
                                         "gen_ai.request.model": "gpt-4o",
                                         "gen_ai.usage.input_tokens": 1200,
                                         "gen_ai.usage.output_tokens": 85, **common})
    chat.end(end_time=T0_NS + 1510 * MS)
    search = tracer.start_span("execute_tool search", context=parent,
                               start_time=T0_NS + 1600 * MS,
                               attributes={"gen_ai.operation.name": "execute_tool",
                                           "gen_ai.tool.name": "search", **common})
    search.end(end_time=T0_NS + 1700 * MS)
    checkout = tracer.start_span("execute_tool checkout", context=parent,
                                 start_time=T0_NS + 1800 * MS,
                                 attributes={"gen_ai.operation.name": "execute_tool",
                                             "gen_ai.tool.name": "checkout",
                                             "error.type": "PaymentDeclined", **common})
    checkout.end(end_time=T0_NS + 2000 * MS)
    agent.end(end_time=T0_NS + 2100 * MS)
    provider.shutdown()
    events = client.events
    client.close()
    return events


def producer_events() -> list[Event]:
    """prod-1 through the producer's helpers: a session with a call and a tool in it."""
    client = collector(agent_id="router", tenant_id="acme", linger_ms=5)
    with client.session("prod-1"):
        with client.llm_call(model="gpt-4o-mini") as span:
            span.input_tokens, span.output_tokens = 100, 10
        with client.tool_call("lookup", args={"id": 7}):
            pass
    events = client.events
    client.close()
    return events


def cost_alert(state: AlertState, seconds: float, event_ids: list[str]) -> Alert:
    return Alert(
        alert_id="5f0c2d4e-0d7c-5a43-9a1e-3c3b1f0f9a11", rule="session_cost",
        type=AlertType.COST, state=state, severity=Severity.WARNING,
        scope=AlertScope.SESSION, key="conv-42", tenant_id="acme", agent_id="concierge",
        session_id="conv-42", value=1.5, threshold=1.0, window_s=60,
        ts=T0 + timedelta(seconds=seconds),
        reason=f"Session conv-42 cost alert {state.value}.", event_ids=event_ids)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Event]]:
    path = tmp_path_factory.mktemp("session") / "chdb"
    conv = otel_events()
    events = conv + producer_events()
    chat = next(e for e in conv if e.kind == "llm_call")
    with ChdbBackend(path) as backend:
        migrate(backend, SchemaConfig(ttl_days=None))  # fixed event times: no TTL
        sink = ClickHouseSink(backend)
        sink.add_events(events)
        sink.add_events([chat])  # stored twice (an at-least-once retry): shown once
        sink.add_alerts([cost_alert(AlertState.FIRING, 1.5, [chat.event_id]),
                         cost_alert(AlertState.RESOLVED, 2.1, [chat.event_id])])
        sink.flush()
    return str(path), conv


def labels(node_rows: list[Any]) -> list[str]:
    return [str(n.row["operationName"]) for n in node_rows]


def test_the_session_nests_its_events_by_span_ids(seeded: tuple[str, list[Event]]) -> None:
    url, conv = seeded
    path = load_session(StoreSettings.from_env({}, url=url), "conv-42")
    assert len(path.events) == 4  # the duplicate chat shows once
    (root,) = path.roots
    assert root.row["operationName"] == "agent_step concierge"
    assert labels(root.children) == [
        "llm_call chat", "tool_call search", "tool_call checkout"]
    chat, _, checkout = (n.row for n in root.children)
    assert chat["traceID"] == "conv-42"
    assert chat["parentSpanID"] == root.row["spanID"]
    assert chat["startTime"] == (T0_NS + 10 * MS) / MS
    assert chat["duration"] == 1500.0
    assert (chat["model"], chat["input_tokens"], chat["output_tokens"]) == ("gpt-4o", 1200, 85)
    assert chat["cost_usd"] == next(e.cost_usd for e in conv if e.kind == "llm_call")
    assert (checkout["status"], checkout["statusCode"], checkout["statusMessage"]) == (
        "error", 2, "PaymentDeclined")
    tags = {t["key"]: t["value"] for t in chat["tags"]}
    assert tags["model"] == "gpt-4o"
    assert tags["otel.span.name"] == "chat gpt-4o"  # the event's attributes too
    assert [(a["state"], a["rule"]) for a in path.alerts] == [
        ("firing", "session_cost"), ("resolved", "session_cost")]


def test_a_producer_session_hangs_its_calls_and_its_end_from_its_start(
    seeded: tuple[str, list[Event]],
) -> None:
    url, _ = seeded
    path = load_session(StoreSettings.from_env({}, url=url), "prod-1")
    (root,) = path.roots
    assert root.row["kind"] == "session_start"
    assert [n.row["kind"] for n in root.children] == ["llm_call", "tool_call", "session_end"]
    assert path.alerts == []


def test_the_command_prints_the_tree_with_costs_errors_and_alerts(
    seeded: tuple[str, list[Event]], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    url, conv = seeded
    code, out, err = run(capsys, "session", "conv-42", "--url", url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("session conv-42  tenant acme  agent concierge")
    assert "4 events (1 LLM calls, 2 tool calls), 1 errors" in lines[1]
    cost = next(e.cost_usd for e in conv if e.kind == "llm_call")
    assert cost is not None
    # depth by the tree's indentation: the agent step at 1, its calls at 2
    depth = {re.sub(r"^[│├└─ ]+", "", line): (len(line) - len(line.lstrip("│├└─ "))) // 4
             for line in lines[2:]}
    (agent,) = [k for k in depth if "agent_step  concierge" in k]
    (chat,) = [k for k in depth if "llm_call  chat" in k]
    (checkout,) = [k for k in depth if "tool_call  checkout" in k]
    assert (depth[agent], depth[chat], depth[checkout]) == (1, 2, 2)
    assert agent.startswith("09:00:00.000")
    assert chat.startswith("09:00:00.010")
    assert "gpt-4o  1.50 s  1200→85 tok" in chat
    assert f"${cost:.4f}" in chat
    assert chat.endswith("⚠ session_cost")  # the alert cites it
    assert checkout.endswith("✗ PaymentDeclined")
    firing = [k for k in depth if "firing  session_cost (warning)" in k]
    assert firing == ["09:00:01.500  firing  session_cost (warning): Session conv-42 cost "
                      "alert firing."]


def test_an_unknown_session_is_a_one_line_error(
    seeded: tuple[str, list[Event]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = seeded
    code, out, err = run(capsys, "session", "no-such-session", "--url", url)
    assert (code, out) == (2, "")
    assert error_line(err) == (
        f"agentwatch: error: no events of session 'no-such-session' in chDB at {url}, "
        "database agentwatch (`agentwatch query --saved top-sessions` lists sessions)")


def test_a_missing_store_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "session", "conv-42", "--url", str(tmp_path / "none"))
    assert code == 2
    assert error_line(err).startswith(f"agentwatch: error: no chDB database at {tmp_path}")


def row(span: str, parent: str = "") -> dict[str, Any]:
    return {"spanID": span, "parentSpanID": parent}


def test_build_tree_survives_parent_cycles_and_unknown_parents() -> None:
    rows = [row("a", "b"), row("b", "a"), row("c", "elsewhere"), row("d", "d"), row("e", "c")]
    roots = build_tree(rows)
    # the cycle a <-> b is cut where it closes: b (the later) is a root, a under it
    assert [n.row["spanID"] for n in roots] == ["b", "c", "d"]
    assert [n.row["spanID"] for n in roots[0].children] == ["a"]
    assert roots[0].children[0].children == []
    assert [n.row["spanID"] for n in roots[1].children] == ["e"]


def tenant_events(tenant_id: str, agent_id: str) -> list[Event]:
    """conv-7 of ``tenant_id``: a session id two tenants both use."""
    client = collector(agent_id=agent_id, tenant_id=tenant_id, linger_ms=5)
    with client.session("conv-7"), client.tool_call(f"lookup_{tenant_id}", args={"id": 1}):
        pass
    events = client.events
    client.close()
    return events


def test_a_session_id_two_tenants_share_needs_and_takes_tenant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chdb"
    acme, globex = tenant_events("acme", "router"), tenant_events("globex", "planner")
    alert = cost_alert(AlertState.FIRING, 1.0, [globex[0].event_id]).model_copy(
        update={"alert_id": "7e0c2d4e-0d7c-5a43-9a1e-3c3b1f0f9a77", "tenant_id": "globex",
                "session_id": "conv-7", "key": "conv-7"})
    with ChdbBackend(path) as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        sink = ClickHouseSink(backend)
        sink.add_events(acme + globex)
        sink.add_alerts([alert])
        sink.flush()
    settings = StoreSettings.from_env({}, url=str(path))
    with pytest.raises(Exception, match=r"conv-7' has events of 2 tenants \(acme, globex\): "
                                        r"pass --tenant"):
        load_session(settings, "conv-7")
    only = load_session(settings, "conv-7", "globex")
    assert {e["tenant_id"] for e in only.events} == {"globex"}
    assert sorted(e["event_id"] for e in only.events) == sorted(e.event_id for e in globex)
    assert [a["alert_id"] for a in only.alerts] == [alert.alert_id]
    assert load_session(settings, "conv-7", "acme").alerts == []
    code, out, _ = run(capsys, "session", "conv-7", "--tenant", "acme", "--url", str(path))
    assert code == 0
    assert "tenant acme" in out
    assert "lookup_acme" in out
    assert "lookup_globex" not in out
    code, _, err = run(capsys, "session", "conv-7", "--tenant", "initech", "--url", str(path))
    assert code == 2
    assert "no events of session 'conv-7' of tenant 'initech'" in error_line(err)
