"""``agentwatch session ID``: one session's path as a tree in the terminal.

It runs the session trace view's SQL (:mod:`agentwatch.sinks._session`, the same as the
Grafana "session trace" dashboard) and nests each event under the event whose span is
its parent; events with no parent in the session hang from the session itself, in the
order they started (each line shows that start: the event's time less its duration).
LLM and tool calls show their duration, cost, tokens and errors, and ``⚠ rule`` when an
alert of that rule cites the event; the alerts the session raised follow, each state
change on one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from agentwatch.cli._store import open_store
from agentwatch.schemas import ConfigError
from agentwatch.sinks import (
    SESSION_ALERTS_SQL,
    SESSION_SPANS_SQL,
    StoreSettings,
    quote_identifier,
    session_sql,
)

__all__ = ["SessionPath", "SpanNode", "load_session", "render_session", "run_session"]

_MAX_ID_CHARS: Final = 256  # the longest session id the event contract allows


@dataclass(slots=True)
class SpanNode:
    """One event of the session with the events whose span is its child."""

    row: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)


@dataclass(slots=True)
class SessionPath:
    session_id: str
    roots: list[SpanNode]
    events: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


def _dicts(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def build_tree(events: list[dict[str, Any]]) -> list[SpanNode]:
    """The events nested by span id, in the order given (by start time): an event whose
    parent span is not an event of the session is a root."""
    nodes: dict[str, SpanNode] = {}
    for row in events:
        nodes.setdefault(row["spanID"], SpanNode(row))
    roots: list[SpanNode] = []
    for row in events:
        node = nodes[row["spanID"]]
        if node.row is not row:
            continue  # a second event with the same span id: shown once
        parent = nodes.get(row["parentSpanID"]) if row["parentSpanID"] else None
        if parent is None or parent is node or _is_descendant(parent, node):
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def _is_descendant(candidate: SpanNode, of: SpanNode) -> bool:
    """Whether ``candidate`` sits under ``of`` already (parent ids that form a cycle)."""
    stack = list(of.children)
    while stack:
        node = stack.pop()
        if node is candidate:
            return True
        stack.extend(node.children)
    return False


def load_session(
    settings: StoreSettings, session_id: str, tenant_id: str | None = None
) -> SessionPath:
    """The session's events and alerts (of ``tenant_id`` only, when given: session ids are
    unique per tenant); :class:`ConfigError` when it has no event, or when it has events
    of several tenants and no ``tenant_id`` says which."""
    if not session_id or len(session_id) > _MAX_ID_CHARS:
        raise ConfigError(f"session id: 1 to {_MAX_ID_CHARS} characters, got {len(session_id)}")
    if tenant_id is not None and not 0 < len(tenant_id) <= _MAX_ID_CHARS:
        raise ConfigError(f"--tenant: 1 to {_MAX_ID_CHARS} characters, got {len(tenant_id)}")
    params = {"session": session_id}
    database = settings.database
    spans_sql = session_sql(SESSION_SPANS_SQL, database)
    alerts_sql = session_sql(SESSION_ALERTS_SQL, database)
    if tenant_id is not None:  # around the dashboards' SQL, which stays as it is
        params["tenant"] = tenant_id
        # the values are query parameters; the database name is a checked identifier
        spans_sql = f"SELECT * FROM ({spans_sql}) WHERE tenant_id = {{tenant:String}}"  # noqa: S608
        alerts_sql = (
            f"SELECT * FROM ({alerts_sql}) WHERE alert_id IN (SELECT alert_id FROM "  # noqa: S608
            f"{quote_identifier(database)}.alerts WHERE session_id = {{session:String}} "
            "AND tenant_id = {tenant:String})"
        )
    with open_store(settings) as backend:
        spans = backend.query(spans_sql, params)
        alerts = backend.query(alerts_sql, params)
    events = _dicts(spans.column_names, spans.rows)
    of_tenant = f" of tenant {tenant_id!r}" if tenant_id is not None else ""
    if not events:
        raise ConfigError(
            f"no events of session {session_id!r}{of_tenant} in {settings.describe()}, "
            f"database {database} (`agentwatch query --saved top-sessions` lists sessions)"
        )
    tenants = sorted({str(e["tenant_id"]) for e in events})
    if len(tenants) > 1:
        raise ConfigError(
            f"session {session_id!r} has events of {len(tenants)} tenants "
            f"({', '.join(tenants)}): pass --tenant to choose one"
        )
    return SessionPath(session_id, build_tree(events), events,
                       _dicts(alerts.column_names, alerts.rows))


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%H:%M:%S.%f")[:-3]
    return str(value)


def _start(row: dict[str, Any]) -> str:
    """When the event's call started (its time less its duration), to the millisecond."""
    return _time(datetime.fromtimestamp(float(row["startTime"]) / 1000, UTC))


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _label(row: dict[str, Any], *, show_agent: bool, alerted: Sequence[str] = ()) -> str:
    error = row["status"] == "error"
    parts = [f"[dim]{_start(row)}[/]",
             f"[bold {'red' if error else 'cyan'}]{escape(str(row['kind']))}[/]"]
    if row["name"]:
        parts.append(escape(str(row["name"])))
    if row["model"]:
        parts.append(f"[magenta]{escape(str(row['model']))}[/]")
    if row["duration_ms"] is not None:
        parts.append(_ms(float(row["duration_ms"])))
    if row["input_tokens"] is not None or row["output_tokens"] is not None:
        parts.append(f"{row['input_tokens'] or 0}→{row['output_tokens'] or 0} tok")
    if row["cost_usd"]:
        parts.append(f"[green]${row['cost_usd']:.4f}[/]")
    if error:
        parts.append(f"[red]✗ {escape(str(row['error_type'] or 'error'))}[/]")
    if show_agent:
        parts.append(f"[dim]({escape(str(row['serviceName']))})[/]")
    if alerted:
        parts.append(f"[bold yellow]⚠ {escape(', '.join(alerted))}[/]")
    return "  ".join(parts)


def _alerted_events(alerts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """event id -> the rules whose alerts cite it (their sample of contributing events)."""
    rules: dict[str, list[str]] = {}
    for alert in alerts:
        for event_id in alert["event_ids"] or ():
            cited = rules.setdefault(str(event_id), [])
            if alert["rule"] not in cited:
                cited.append(str(alert["rule"]))
    return rules


def _summary(path: SessionPath) -> str:
    events = path.events
    agents = sorted({str(e["serviceName"]) for e in events})
    tenants = sorted({str(e["tenant_id"]) for e in events})
    cost = sum(float(e["cost_usd"] or 0) for e in events)
    errors = sum(1 for e in events if e["status"] == "error")
    llm = sum(1 for e in events if e["kind"] == "llm_call")
    tools = sum(1 for e in events if e["kind"] == "tool_call")
    first = min(events, key=lambda e: float(e["startTime"]))
    last = max(e["ts"] for e in events)
    return (
        f"[bold]session {escape(path.session_id)}[/]  tenant {escape(', '.join(tenants))}  "
        f"agent {escape(', '.join(agents))}\n"
        f"{len(events)} events ({llm} LLM calls, {tool_text(tools)}), "
        f"{errors} errors, [green]${cost:.4f}[/], {_start(first)} → {_time(last)} UTC "
        f"({last:%Y-%m-%d})"
    )


def tool_text(tools: int) -> str:
    return f"{tools} tool call{'' if tools == 1 else 's'}"


def render_session(path: SessionPath, console: Console) -> None:
    """Print the tree of ``path``, then its alerts."""
    several_agents = len({e["serviceName"] for e in path.events}) > 1
    alerted = _alerted_events(path.alerts)
    tree = Tree(_summary(path))

    def add(branch: Tree, node: SpanNode) -> None:
        child = branch.add(_label(node.row, show_agent=several_agents,
                                  alerted=alerted.get(str(node.row["event_id"]), ())))
        for sub in node.children:
            add(child, sub)

    for root in path.roots:
        add(tree, root)
    if path.alerts:
        alerts = tree.add(f"[bold yellow]alerts ({len(path.alerts)} state changes)[/]")
        for alert in path.alerts:
            colour = "red" if alert["state"] == "firing" else "green"
            alerts.add(
                f"[dim]{_time(alert['ts'])}[/]  [bold {colour}]{alert['state']}[/]  "
                f"{escape(str(alert['rule']))} ({escape(str(alert['severity']))}): "
                f"{escape(str(alert['reason']))}"
            )
    console.print(tree)


def run_session(
    settings: StoreSettings, session_id: str, console: Console, tenant_id: str | None = None
) -> SessionPath:
    path = load_session(settings, session_id, tenant_id)
    render_session(path, console)
    return path
