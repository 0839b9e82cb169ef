"""``agentwatch demo``: a simulated fleet through the embedded pipeline, with a summary."""

from __future__ import annotations

import secrets
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentwatch.alerts import (
    EndpointConfig,
    ReceivedDelivery,
    WebhookReceiver,
    load_endpoints,
)
from agentwatch.cli._fleet import FLEET_TOOL_POLICY, FleetPlan, fleet_events
from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import BudgetRule, Engine, RulesConfig, ToolPolicyRule, load_rules
from agentwatch.producer import AgentHalted, Agentwatch, Halt, InProcessLog, InProcessTransport
from agentwatch.schemas import (
    Alert,
    AlertState,
    AlertType,
    ConfigError,
    default_price_table,
)
from agentwatch.schemas.settings import CONTROL_TOPIC, EVENTS_TOPIC
from agentwatch.sinks import DEFAULT_CHDB_PATH, ChdbBackend, ClickHouseSink, SchemaConfig, migrate

__all__ = ["DEMO_DATA_DIR", "EXAMPLE_SQL", "LOOP_SESSION", "demo_chdb_path", "run_demo"]

#: the fleet's runaway session: its simulated agent obeys halts (the loop rule halts it)
LOOP_SESSION = "supply-loop-0001"


@dataclass(slots=True)
class _Halted:
    """What the halt of the looping agent stopped."""

    halt: Halt
    at_ts: str  # event time of the call that got AgentHalted
    calls_saved: int = 0
    usd_saved: float = 0.0

#: where the demo keeps its chDB database by default: where `agentwatch query` (and the
#: other store commands) look when no --url / CLICKHOUSE_URL is given, so the next step
#: after `make demo` works as it is (``agentwatch query --saved cost-by-agent``)
DEMO_DATA_DIR = Path(DEFAULT_CHDB_PATH).parent
_MARKER = ".agentwatch-demo"  # beside the database: the demo wrote it, and may replace it

EXAMPLE_SQL = """\
SELECT agent_id,
       count()                       AS events,
       countIf(status = 'error')     AS errors,
       round(sum(cost_usd), 4)       AS cost_usd,
       round(quantile(0.95)(duration_ms)) AS p95_ms
FROM agentwatch.events
GROUP BY agent_id
ORDER BY cost_usd DESC"""

_EXPECTED_TYPES = {AlertType.RUNAWAY_LOOP, AlertType.COST, AlertType.ERROR_RATE,
                   AlertType.BUDGET}


def run_demo(*, duration_s: float, data_dir: Path | None, rules_path: Path | None,
             endpoints_path: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0 when every injected failure was caught).
    Alerts go to a local receiver, and to the endpoints of ``endpoints_path`` if given."""
    console = console or Console()
    rules = load_rules(rules_path)  # a bad rules file fails before anything starts
    rules, expected = _with_fleet_policy(rules)
    extra = load_endpoints(endpoints_path) if endpoints_path is not None else []
    plan = FleetPlan()
    rules = with_demo_budget(rules)
    events = list(fleet_events(plan))
    secret = secrets.token_hex(16)
    chdb_path = _fresh_demo_store(DEMO_DATA_DIR if data_dir is None else data_dir)
    with ExitStack() as stack:
        backend = stack.enter_context(ChdbBackend(chdb_path))
        # No retention: the simulated fleet's clock starts on a fixed date, and ClickHouse
        # drops rows already past a table's TTL as they are inserted.
        migrate(backend, SchemaConfig(ttl_days=None))
        sink = ClickHouseSink(backend)

        def on_webhook(delivery: ReceivedDelivery) -> None:
            alert = delivery.alert()
            mark = "[green]signature ok[/]" if delivery.verified else "[red]BAD SIGNATURE[/]"
            colour = "red" if alert.state is AlertState.FIRING else "green"
            console.print(
                f"  [bold {colour}]webhook {alert.state.value.upper():8}[/] "
                f"[bold]{alert.rule}[/] {alert.key}: {alert.reason} ({mark})",
                highlight=False,
            )

        receiver = stack.enter_context(WebhookReceiver(secret=secret, on_receive=on_webhook))
        # the local receiver listens on 127.0.0.1: the endpoint must opt in to reach it
        local = EndpointConfig(name="demo", url=receiver.url, secret=secret, allow_private=True)
        endpoints = [local, *extra]
        log = InProcessLog()
        # one in-process log: its topic names are the pipeline's, whatever the environment
        # says for a real deployment (AGENTWATCH_TOPIC, AGENTWATCH_CONTROL_TOPIC)
        client = Agentwatch(transport=InProcessTransport(log, EVENTS_TOPIC),
                            tenant_id=plan.tenant_id, agent_id="demo", linger_ms=20,
                            control=True, control_topic=CONTROL_TOPIC)
        pipeline = EmbeddedPipeline(log, Engine(rules), sink, endpoints, topic=EVENTS_TOPIC,
                                    control_topic=CONTROL_TOPIC).start()

        console.print(
            f"[bold]agentwatch demo[/]: 3 agents, {len(events):,} events over "
            f"{plan.duration_s // 60} minutes of agent time, played in {duration_s:.0f} s.\n"
            f"  chDB at {chdb_path}; webhooks to {receiver.url}"
            + "".join(f", {e.name} ({e.format})" for e in extra) + "\n"
        )
        started = time.monotonic()
        halted = _play(events, client, duration_s, plan, console)
        client.flush(timeout_s=10.0)
        pipeline.wait_until(log.end_offset(EVENTS_TOPIC), timeout_s=30.0)
        pipeline.stop(timeout_s=60.0 if extra else 10.0)
        produced = client.stats
        client.close()
        receiver.wait_for(len(pipeline.stats.alerts), timeout_s=10.0)
        elapsed_s = time.monotonic() - started

        stats = pipeline.stats
        _print_summary(console, sink, stats.alerts, elapsed_s)
        _print_halt(console, halted, stats.alerts)
        console.print(
            f"\nproducer: {produced.emitted:,} emitted, {produced.sent:,} sent, "
            f"{produced.dropped} dropped; pipeline: {stats.records:,} records, "
            f"{stats.events:,} events, {stats.invalid} invalid; "
            f"webhooks: {sum(d.delivered for d in stats.deliveries)}/"
            f"{len(stats.deliveries)} delivered, {len(receiver.received)} received by the "
            f"local receiver, {len(stats.failures)} failed"
        )
        for failure in stats.failures[:5]:
            console.print(f"  [red]failed:[/] {failure.reason}", highlight=False)
        url = "" if data_dir is None else f" --url {chdb_path}"
        looping = next((a.session_id for a in stats.alerts
                        if a.type is AlertType.RUNAWAY_LOOP and a.session_id), None)
        session_line = "" if looping is None else f"\n  agentwatch session{url} {looping}"
        console.print(
            f"\nThe database stays in {chdb_path}. Next, try:\n"
            f"  agentwatch query{url} --saved cost-by-agent\n"
            f"  agentwatch query{url} --saved tool-audit\n"
            f"  agentwatch query{url} --list{session_line}", highlight=False, soft_wrap=True)
        caught = {a.type for a in stats.alerts if a.state is AlertState.FIRING}
        missing = expected - caught
        if missing:
            console.print(f"[bold red]missed:[/] {', '.join(sorted(m.value for m in missing))}")
            return 1
        return 0


# -- the demo's budget (issue 17): the cost spike makes the tenant's daily budget forecast
#: the demo tenant's daily budget: the fleet spends ~$2.65 in its 8 minutes, most of it in
#: the cost spike, whose first call takes the burn rate of the last 10 minutes to ~$3/h:
#: at that rate the $25 run out at ~17:20 UTC, before midnight -- a forecast alert
DEMO_BUDGET: Final = {"type": "budget", "scope": "tenant", "amount_usd": 25.0,
                      "period": "day", "forecast_window_s": 600}


def with_demo_budget(rules: RulesConfig) -> RulesConfig:
    """``rules`` with the demo's ``demo_daily_budget`` rule (unless a rule has the name)."""
    if "demo_daily_budget" in rules.rules:
        return rules
    budget = BudgetRule.model_validate(DEMO_BUDGET)
    return rules.model_copy(update={"rules": {**rules.rules, "demo_daily_budget": budget}})

def _with_fleet_policy(rules: RulesConfig) -> tuple[RulesConfig, set[AlertType]]:
    """The rules with the fleet's tool policy (unless they have a tool_policy rule of their
    own), and the alert types the demo must then see fire."""
    if any(isinstance(rule, ToolPolicyRule) for rule in rules.rules.values()):
        return rules, set(_EXPECTED_TYPES)
    policy = ToolPolicyRule.model_validate(FLEET_TOOL_POLICY)
    with_policy = rules.model_copy(update={"rules": {**rules.rules, "tool_policy": policy}})
    return with_policy, {*_EXPECTED_TYPES, AlertType.TOOL_POLICY}


def demo_chdb_path(data_dir: Path) -> Path:
    """The demo's chDB database under ``data_dir`` (the layout of the default store)."""
    return data_dir / Path(DEFAULT_CHDB_PATH).name


def _fresh_demo_store(data_dir: Path) -> Path:
    """The demo's database path under ``data_dir``, empty: a database an earlier demo left
    there is replaced (its totals would add up with this run's); anything else there is
    left alone and is an error."""
    chdb_path = demo_chdb_path(data_dir)
    marker = data_dir / _MARKER
    if chdb_path.exists():
        if not marker.exists():
            raise ConfigError(
                f"{chdb_path} already exists and was not written by `agentwatch demo`: "
                "give the demo another --data-dir (it replaces only its own database)")
        shutil.rmtree(chdb_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `agentwatch demo`, which replaces the database next to "
                      "this file at its next run\n")
    return chdb_path


def _play(events: list[dict[str, object]], client: Agentwatch, duration_s: float,
          plan: FleetPlan, console: Console) -> _Halted | None:
    """Emit the fleet's events, paced so that its event time plays in ``duration_s``. The
    looping session's agent asks before each call whether it is halted, and stops (ends
    its session) on ``AgentHalted``; returns what that halt saved."""
    halted: _Halted | None = None
    prices = default_price_table()
    first_ts = str(events[0]["ts"])
    start_s = _seconds(first_ts)
    speed = plan.duration_s / duration_s
    columns = (TextColumn("[bold]agent time[/] {task.fields[clock]}"), BarColumn(),
               TextColumn("{task.completed:,.0f} events"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("play", total=len(events), clock="09:00:00")
        wall0 = time.monotonic()
        for i, event in enumerate(events):
            ts = str(event["ts"])
            due = wall0 + (_seconds(ts) - start_s) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if event["session_id"] == LOOP_SESSION and event["kind"] in _CALLS:
                if halted is None:
                    halted = _obey(client, event)
                if halted is not None:  # the agent stopped: this call never happens
                    halted.calls_saved += 1
                    halted.usd_saved += prices.cost_usd(
                        event.get("model"), event.get("input_tokens"),  # type: ignore[arg-type]
                        event.get("output_tokens")) or 0.0  # type: ignore[arg-type]
                    continue
            elif (halted is not None and event["session_id"] == LOOP_SESSION
                  and event["kind"] == "session_end"):
                continue  # ended when it was halted
            client.emit(event)
            if i % 25 == 0 or i == len(events) - 1:
                progress.update(task, completed=i + 1, clock=ts[11:19])
    return halted


_CALLS = frozenset({"llm_call", "tool_call"})


def _obey(client: Agentwatch, event: dict[str, object]) -> _Halted | None:
    """The simulated agent's check before a call, as ``llm_call()``/``tool_call()`` do it:
    on a halt it gets ``AgentHalted``, ends its session (status error) and stops."""
    try:
        halt = client.halted(LOOP_SESSION)
        if halt is not None:
            raise AgentHalted(halt)  # noqa: TRY301 -- what llm_call()/tool_call() raise
    except AgentHalted as exc:
        client.emit({**{k: event[k] for k in ("ts", "tenant_id", "agent_id", "session_id")},
                     "kind": "session_end", "status": "error", "error_type": "AgentHalted"})
        return _Halted(exc.halt, str(event["ts"]))
    return None


def _print_halt(console: Console, halted: _Halted | None, alerts: list[Alert]) -> None:
    if halted is None:
        console.print(f"\n[bold red]not halted:[/] {LOOP_SESSION} ran to its end")
        return
    fired = next((a for a in alerts if a.state is AlertState.FIRING
                  and a.alert_id == halted.halt.alert_id), None)
    after = ""
    if fired is not None:
        lag_s = (_parse(halted.at_ts) - fired.ts).total_seconds()
        after = f", {lag_s:.2f} s of agent time after the alert fired"
    console.print(
        f"\n[bold]halt[/]: {LOOP_SESSION} stopped on AgentHalted at "
        f"{halted.at_ts[11:23]} (by {halted.halt.by}{after}); the halt saved "
        f"{halted.calls_saved} calls and ${halted.usd_saved:.4f}", highlight=False)


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _seconds(ts: str) -> float:
    hours, minutes, seconds = ts[11:26].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _print_summary(console: Console, sink: ClickHouseSink, alerts: list[Alert],
                   elapsed_s: float) -> None:
    per_agent = sink.query(
        "SELECT agent_id, count(), countIf(status = 'error'), sum(cost_usd) "
        "FROM agentwatch.events GROUP BY agent_id ORDER BY agent_id"
    )
    fired = {a.alert_id: a for a in alerts if a.state is AlertState.FIRING}
    resolved = {a.alert_id: a for a in alerts if a.state is AlertState.RESOLVED}
    table = Table(title=f"Fleet summary ({elapsed_s:.1f} s)", title_justify="left")
    for column in ("agent", "events", "errors", "cost (USD)", "alerts fired", "resolved"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for agent_id, n_events, n_errors, cost in per_agent.rows:
        n_fired = sum(1 for a in fired.values() if a.agent_id == agent_id)
        n_resolved = sum(1 for i in resolved if fired.get(i) and fired[i].agent_id == agent_id)
        table.add_row(agent_id, f"{n_events:,}", f"{n_errors:,}", f"{cost:,.4f}",
                      str(n_fired), str(n_resolved))
    console.print()
    console.print(table)

    alert_table = Table(title="Alerts", title_justify="left")
    for column in ("rule", "severity", "key", "value", "fired (event time)", "resolved"):
        alert_table.add_column(column)
    for alert_id, alert in fired.items():
        end = resolved.get(alert_id)
        alert_table.add_row(
            alert.rule, alert.severity.value, alert.key, f"{alert.value:.4g}",
            alert.ts.strftime("%H:%M:%S"), end.ts.strftime("%H:%M:%S") if end else "still firing",
        )
    console.print(alert_table)

    console.print("\n[bold]Example query[/] (the same SQL runs on a ClickHouse server):")
    console.print(EXAMPLE_SQL, highlight=False)
    result = sink.query(EXAMPLE_SQL)
    sql_table = Table()
    for name in result.column_names:
        sql_table.add_column(name)
    for row in result.rows:
        sql_table.add_row(*(str(v) for v in row))
    console.print(sql_table)
