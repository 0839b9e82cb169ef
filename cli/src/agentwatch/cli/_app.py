"""The ``agentwatch`` command: one name, subcommands per job."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from agentwatch.schemas import Alert, ConfigError, encode_alert

app = typer.Typer(
    name="agentwatch",
    help="Real-time telemetry and alerts for AI agents in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Rules file (YAML or TOML); defaults apply without it.",
                 show_default=False),
]


@app.command()
def demo(
    duration_s: Annotated[float, typer.Option(
        "--duration-s", min=2.0, max=300.0,
        help="Wall-clock seconds to play the simulated fleet's 8 minutes in.")] = 16.0,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Keep the chDB database in DIR/clickhouse (default: "
        "agentwatch-data, where `agentwatch query` looks); a database an earlier demo left "
        "there is replaced.",
        show_default=False)] = None,
    config: ConfigOption = None,
    endpoints: Annotated[Path | None, typer.Option(
        "--endpoints", metavar="FILE", help="Also deliver the alerts to the webhooks of "
        "this endpoints file (YAML or TOML), e.g. your Slack channel.",
        show_default=False)] = None,
) -> None:
    """Run the whole pipeline in this process on a simulated fleet of agents.

    Producer -> in-process log -> detection core -> chDB (events, alerts) and a signed
    webhook to a receiver on 127.0.0.1. No Kafka, no ClickHouse server needed.
    """
    from agentwatch.cli._demo import run_demo  # noqa: PLC0415 -- keep `--help` fast

    raise typer.Exit(run_demo(duration_s=duration_s, data_dir=data_dir, rules_path=config,
                              endpoints_path=endpoints))


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(
        help="Recorded events, one JSON event per line ('-' reads standard input).",
        show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Backtest alert rules: recorded events through the detection core, in the order given.

    Every alert state change is printed as one JSON line on stdout; a summary and any
    invalid lines (with line numbers; they are skipped) go to stderr.
    """
    from agentwatch.processors.core import Engine, load_rules  # noqa: PLC0415
    from agentwatch.processors.replay import bounded_lines, replay_lines  # noqa: PLC0415

    rules = load_rules(config)
    engine = Engine(rules)
    out = sys.stdout.buffer
    err = sys.stderr

    def on_alert(alert: Alert) -> None:
        out.write(encode_alert(alert) + b"\n")

    def on_invalid(line_no: int, reason: str) -> None:
        print(f"{file}:{line_no}: invalid event: {reason}", file=err)

    gc.freeze()  # long-lived objects stay out of the collector's way: ~10 % faster
    if str(file) == "-":
        stats = replay_lines(bounded_lines(sys.stdin.buffer), engine, on_alert, on_invalid)
    else:
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
        with handle:
            stats = replay_lines(bounded_lines(handle), engine, on_alert, on_invalid)
    out.flush()
    es = engine.stats
    print(
        f"replay: {stats.events} events from {stats.lines} lines, {stats.invalid} invalid; "
        f"{es.alerts_fired} alerts fired, {es.alerts_resolved} resolved, {es.firing} still "
        f"firing; {es.duplicates} duplicates, {es.late} late, {es.unpriced} unpriced",
        file=err,
    )


MetricsPortOption = Annotated[int | None, typer.Option(
    "--metrics-port", metavar="PORT", help="Serve /metrics, /healthz and /readyz on this "
    "port, all interfaces (env AGENTWATCH_<SERVICE>_METRICS_PORT; default 0: off).",
    show_default=False)]


@app.command()
def worker(
    config: ConfigOption = None,
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS).",
        show_default=False)] = None,
    group_id: Annotated[str | None, typer.Option(
        "--group-id", help="Consumer group / app id shared by the workers "
        "(env AGENTWATCH_WORKER_GROUP; default agentwatch-worker).", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Local table store of this worker (env AGENTWATCH_DATA_DIR); "
        "one per worker process.", show_default=False)] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="rocksdb or memory (env AGENTWATCH_STORE; default rocksdb when "
        "rocksdict is installed).", show_default=False)] = None,
    stages: Annotated[str | None, typer.Option(
        "--stages", help="all (one process), split (two processes: the session stage here, "
        "the agent/tenant stage in a child; two cores for one worker), session or rekeyed "
        "(env AGENTWATCH_WORKER_STAGES; default all).", show_default=False)] = None,
    metrics_port: MetricsPortOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="faust's log level.")] = "warning",
) -> None:
    """Run the detection core on Kafka: consume agentwatch.events, produce alert state
    changes to agentwatch.alerts and invalid input to agentwatch.events.dlq.

    Start more workers with the same group id to share the partitions; state lives in
    changelog-backed tables and survives restarts. Topics and more settings come from
    AGENTWATCH_* environment variables (see the README).
    """
    from agentwatch.processors.core import load_rules  # noqa: PLC0415
    from agentwatch.processors.worker import WorkerSettings  # noqa: PLC0415
    from agentwatch.processors.worker.run import run_worker  # noqa: PLC0415

    settings = WorkerSettings.from_env(
        bootstrap_servers=bootstrap_servers, group_id=group_id, data_dir=data_dir,
        store=store, rules_file=config, stages=stages, metrics_port=metrics_port)
    rules = load_rules(settings.rules_file)
    run_worker(settings, rules, loglevel=loglevel)


@app.command()
def schema(
    name: Annotated[str, typer.Argument(help="event or alert", show_default=False)],
) -> None:
    """Print the JSON Schema of the event or the alert contract."""
    from agentwatch.schemas import SCHEMA_NAMES, json_schema_bytes  # noqa: PLC0415

    if name not in SCHEMA_NAMES:
        raise ConfigError(f"unknown schema {name!r}: choose one of {', '.join(SCHEMA_NAMES)}")
    sys.stdout.buffer.write(json_schema_bytes(name))


@app.command()
def otlp(
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="TCP port (4318: OTLP/HTTP's).")] = 4318,
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka brokers (env AGENTWATCH_BOOTSTRAP_SERVERS, else "
        "KAFKA_BOOTSTRAP_SERVERS).",
        show_default=False)] = None,
    tenant_header: Annotated[str, typer.Option(
        "--tenant-header", help="Request header naming the tenant of the spans (else the "
        "resource attribute agentwatch.tenant.id, else AGENTWATCH_TENANT_ID).",
    )] = "X-Agentwatch-Tenant",
    spool_dir: Annotated[Path | None, typer.Option(
        "--spool-dir", help="Keep undelivered records on disk here (env "
        "AGENTWATCH_SPOOL_DIR).", show_default=False)] = None,
    loglevel: Annotated[str, typer.Option(
        "--loglevel", help="debug, info, warning or error.")] = "info",
) -> None:
    """Receive OpenTelemetry GenAI spans over OTLP/HTTP and send them on as events.

    POST /v1/traces (protobuf or JSON, gzip or not): each span with gen_ai.* attributes
    becomes one event, sent to Kafka by the producer (partition batches, retries, the
    spool); other spans are counted and skipped. Producer settings come from the
    AGENTWATCH_* environment variables (see "Add it to an agent" in the README).
    """
    import logging  # noqa: PLC0415

    from agentwatch.cli.otlp import OtlpReceiver, run_receiver  # noqa: PLC0415
    from agentwatch.producer import Agentwatch, ProducerSettings  # noqa: PLC0415

    if loglevel.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--loglevel: {loglevel!r} is not one of debug, info, warning, error")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if bootstrap_servers is None and ProducerSettings.resolve().bootstrap_servers is None:
        raise ConfigError("where to send the events: --bootstrap-servers or "
                          "AGENTWATCH_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS)")
    client = Agentwatch(bootstrap_servers=bootstrap_servers, spool_dir=spool_dir)
    raise typer.Exit(run_receiver(OtlpReceiver(client, tenant_header=tenant_header), host, port))


# -- the ClickHouse store: db, query, sink ----------------------------------------------

UrlOption = Annotated[str | None, typer.Option(
    "--url", metavar="URL", help="ClickHouse: a chDB directory (embedded), "
    "http(s)://host:8123 or clickhouse://user:pw@host/db (env CLICKHOUSE_URL; default "
    "agentwatch-data/clickhouse; credentials also from CLICKHOUSE_USER, CLICKHOUSE_PASSWORD).",
    show_default=False)]
DatabaseOption = Annotated[str | None, typer.Option(
    "--database", metavar="NAME", help="Database of the agentwatch tables "
    "(env CLICKHOUSE_DATABASE; default agentwatch).", show_default=False)]
TtlDaysOption = Annotated[str | None, typer.Option(
    "--ttl-days", metavar="DAYS", help="Days to keep events and dead letters, or 'none' "
    "to keep them; fixed when the tables are created (env AGENTWATCH_TTL_DAYS; default 30).",
    show_default=False)]
ClusterOption = Annotated[str | None, typer.Option(
    "--cluster", metavar="NAME", help="ClickHouse cluster (remote_servers) to create the "
    "tables on: ON CLUSTER, Replicated engines, Distributed *_all tables. Servers only; "
    "no env var.", show_default=False)]

db_app = typer.Typer(
    help="Create, upgrade and inspect the ClickHouse schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate(
    url: UrlOption = None,
    database: DatabaseOption = None,
    ttl_days: TtlDaysOption = None,
    cluster: ClusterOption = None,
) -> None:
    """Create the database and tables, or apply the migrations not applied yet.

    Idempotent and forward only: a second run changes nothing.
    """
    from agentwatch.cli._store import run_migrate  # noqa: PLC0415
    from agentwatch.sinks import StoreSettings  # noqa: PLC0415

    settings = StoreSettings.from_env(url=url, database=database, ttl_days=ttl_days)
    run_migrate(settings, sys.stdout, sys.stderr, cluster=cluster, ttl_given=ttl_days is not None)


@db_app.command("ddl")
def db_ddl(
    database: DatabaseOption = None,
    ttl_days: TtlDaysOption = None,
    cluster: ClusterOption = None,
) -> None:
    """Print the schema's SQL (every statement `db migrate` may run), to apply it yourself.

    Needs no ClickHouse. Running `agentwatch db migrate` afterwards records the versions.
    """
    from agentwatch.cli._store import ddl_text  # noqa: PLC0415
    from agentwatch.sinks import StoreSettings  # noqa: PLC0415

    settings = StoreSettings.from_env(database=database, ttl_days=ttl_days)
    sys.stdout.write(ddl_text(settings.schema(cluster=cluster)))


@db_app.command("status")
def db_status(url: UrlOption = None, database: DatabaseOption = None) -> None:
    """Show the applied migrations against those this agentwatch knows, and row counts."""
    from agentwatch.cli._store import run_status  # noqa: PLC0415
    from agentwatch.sinks import StoreSettings  # noqa: PLC0415

    run_status(StoreSettings.from_env(url=url, database=database), sys.stdout)


@app.command()
def query(
    sql: Annotated[str | None, typer.Argument(
        help="A read query (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS).",
        show_default=False)] = None,
    url: UrlOption = None,
    database: DatabaseOption = None,
    saved: Annotated[str | None, typer.Option(
        "--saved", metavar="NAME", help="Run a saved query instead of SQL (see --list).",
        show_default=False)] = None,
    output: Annotated[Literal["table", "csv", "json"], typer.Option(
        "--format", "-f", help="table (aligned text), csv, or json (one object per line).",
    )] = "table",
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=0, metavar="N", help="At most this many rows (0: no limit).")] = 100,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="NAME=VALUE", help="A query parameter, used as "
        "{name:Type} in the SQL (the value is text ClickHouse parses as Type); repeat for "
        "more.", show_default=False)] = None,
    list_saved: Annotated[bool, typer.Option(
        "--list", help="List the saved queries and exit.")] = False,
) -> None:
    """Run a read query against the store and print the result.

    agentwatch query --saved cost-by-agent

    agentwatch query "SELECT count() FROM agentwatch.events WHERE agent_id = {a:String}" -p a=bot
    """
    from agentwatch.cli import _store  # noqa: PLC0415
    from agentwatch.sinks import StoreSettings  # noqa: PLC0415

    settings = StoreSettings.from_env(url=url, database=database)
    if list_saved:
        if sql is not None or saved is not None:
            raise ConfigError("--list takes no SQL and no --saved")
        _store.list_saved(sys.stdout, settings.database)
        return
    _store.run_query(settings, sys.stdout, sys.stderr, sql=sql, saved=saved, fmt=output,
                     limit=limit, params=param or ())


@app.command()
def session(
    session_id: Annotated[str, typer.Argument(
        metavar="SESSION_ID", help="The session (gen_ai.conversation.id) to show.")],
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="The session's tenant (session ids are unique per tenant; needed "
        "only when two tenants have a session of that id).", show_default=False)] = None,
    url: UrlOption = None,
    database: DatabaseOption = None,
) -> None:
    """Print one session's path as a tree: its LLM and tool calls (nested by span ids,
    with durations, costs, tokens and errors) and the alerts it raised.

    agentwatch session supply-loop-0001 [--tenant acme]

    The same view as the Grafana "agentwatch session trace" dashboard.
    """
    from rich.console import Console  # noqa: PLC0415

    from agentwatch.cli._session import run_session  # noqa: PLC0415
    from agentwatch.sinks import StoreSettings  # noqa: PLC0415

    run_session(StoreSettings.from_env(url=url, database=database), session_id, Console(),
                tenant)


# -- webhooks ------------------------------------------------------------------------------

webhooks_app = typer.Typer(invoke_without_command=True)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.callback()
def webhooks(
    ctx: typer.Context,
    endpoints: Annotated[str | None, typer.Option(
        "--endpoints", metavar="FILE", help="The endpoints file, YAML or TOML (env "
        "AGENTWATCH_WEBHOOKS_FILE).", show_default=False)] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS; default "
        "localhost:9092).", show_default=False)] = None,
    group_id: Annotated[str | None, typer.Option(
        "--group-id", help="Consumer group shared by the dispatchers (env "
        "AGENTWATCH_WEBHOOKS_GROUP; default agentwatch-webhooks).", show_default=False)] = None,
    metrics_port: MetricsPortOption = None,
    loglevel: Annotated[str, typer.Option(
        "--loglevel", help="debug, info, warning or error.")] = "info",
) -> None:
    """Deliver alerts from Kafka to signed webhooks (until interrupted); `test` checks one.

    Reads agentwatch.alerts and POSTs each alert to every endpoint of the endpoints file
    whose filters match, retrying with backoff; what finally fails goes to
    agentwatch.alerts.dlq. Offsets are committed once an alert is delivered or
    dead-lettered. Settings: AGENTWATCH_WEBHOOKS_* (see the README).
    """
    if ctx.invoked_subcommand is not None:
        return
    from agentwatch.alerts import WebhooksSettings, load_endpoints  # noqa: PLC0415

    settings = WebhooksSettings.from_env(
        endpoints_file=endpoints, bootstrap_servers=bootstrap_servers, group_id=group_id,
        metrics_port=metrics_port,
    )
    configs = load_endpoints(settings.endpoints_file)
    if loglevel.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--loglevel: {loglevel!r} is not one of debug, info, warning, error")
    from agentwatch.alerts.kafka import run_dispatcher  # noqa: PLC0415

    raise typer.Exit(run_dispatcher(settings, configs, loglevel=loglevel))


@webhooks_app.command("test")
def webhooks_test(
    url: Annotated[str, typer.Argument(
        help="The endpoint: http:// or https:// URL.", show_default=False)],
    secret: Annotated[str | None, typer.Option(
        "--secret", envvar="AGENTWATCH_WEBHOOK_SECRET", metavar="S",
        help="Signing secret (env AGENTWATCH_WEBHOOK_SECRET).", show_default=False)] = None,
    fmt: Annotated[Literal["json", "slack", "pagerduty"], typer.Option(
        "--format", help="json (the alert contract), slack (an incoming-webhook message) "
        "or pagerduty (an Events v2 trigger; needs --routing-key).",
    )] = "json",
    routing_key: Annotated[str | None, typer.Option(
        "--routing-key", envvar="PAGERDUTY_ROUTING_KEY", metavar="KEY",
        help="PagerDuty integration key for --format pagerduty (env PAGERDUTY_ROUTING_KEY).",
        show_default=False)] = None,
    timeout_s: Annotated[float, typer.Option(
        "--timeout-s", min=0.001, max=60.0, metavar="N", help="Seconds to wait for the answer.",
    )] = 5.0,
    allow_private: Annotated[bool, typer.Option(
        "--allow-private", help="Let URL reach loopback, private, link-local or metadata "
        "addresses (as an endpoint's `allow_private: true`); refused without it.",
    )] = False,
) -> None:
    """Send one signed sample alert (a runaway loop, fresh alert id) to URL, once.

    Prints the delivery id, the signature header, the HTTP status, the time taken and the
    response (its first 500 characters); exits 0 on a 2xx answer, 1 otherwise.
    """
    from agentwatch.cli._webhooks import run_test  # noqa: PLC0415

    raise typer.Exit(run_test(url, secret, fmt=fmt, timeout_s=timeout_s,
                              out=sys.stdout, err=sys.stderr, allow_private=allow_private,
                              routing_key=routing_key))


# -- alerts --------------------------------------------------------------------------------

alerts_app = typer.Typer(no_args_is_help=True, help="Act on alerts: acknowledge one.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(
        help="The alert's alert_id (webhook body, alerts table).", show_default=False)],
    by: Annotated[str, typer.Option(
        "--by", metavar="NAME", help="Who takes it (stored with the ack).",
        show_default=False)],
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS; default "
        "localhost:9092).", show_default=False)] = None,
    topic: Annotated[str | None, typer.Option(
        "--topic", help="The acks topic (env AGENTWATCH_ACKS_TOPIC; default "
        "agentwatch.acks).", show_default=False)] = None,
) -> None:
    """Acknowledge an alert: it is not escalated any further.

    Writes the ack to the compacted acks topic: every `agentwatch webhooks` dispatcher
    applies it (also after a restart) and `agentwatch sink` stores it in alert_acks.
    """
    from agentwatch.cli._control import AckSettings  # noqa: PLC0415
    from agentwatch.cli._webhooks import run_ack  # noqa: PLC0415

    settings = AckSettings.from_env(bootstrap_servers=bootstrap_servers, topic=topic)
    raise typer.Exit(run_ack(alert_id, by, bootstrap_servers=settings.bootstrap_servers,
                             topic=settings.topic, out=sys.stdout))


@app.command()
def sink(
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS; default "
        "localhost:9092).", show_default=False)] = None,
    group_id: Annotated[str | None, typer.Option(
        "--group-id", help="Consumer group shared by the sinks (env AGENTWATCH_SINK_GROUP; "
        "default agentwatch-sink).", show_default=False)] = None,
    url: UrlOption = None,
    metrics_port: MetricsPortOption = None,
    loglevel: Annotated[str, typer.Option(
        "--loglevel", help="debug, info, warning or error.")] = "info",
) -> None:
    """Write events and alerts from Kafka to ClickHouse in batches.

    Consumes agentwatch.events, agentwatch.alerts and agentwatch.alerts.dlq (webhook
    deliveries that finally failed) until interrupted; a batch is stored once even when
    retried. The schema is migrated at start (idempotent).
    Batch sizes and topics come from AGENTWATCH_SINK_* and AGENTWATCH_*_TOPIC
    environment variables (see the README).
    """
    from agentwatch.sinks import SinkSettings, StoreSettings  # noqa: PLC0415

    sink_settings = SinkSettings.from_env(bootstrap_servers=bootstrap_servers, group_id=group_id,
                                          metrics_port=metrics_port)
    store_settings = StoreSettings.from_env(url=url)
    from agentwatch.sinks.kafka import run_sink  # noqa: PLC0415 -- after the settings parse

    if loglevel.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--loglevel: {loglevel!r} is not one of debug, info, warning, error")
    raise typer.Exit(run_sink(sink_settings, store_settings, loglevel=loglevel))


# -- control -------------------------------------------------------------------------------

control_app = typer.Typer(
    help="Halt and resume agents (the control topic that producers with control=True "
    "follow).", no_args_is_help=True)
app.add_typer(control_app, name="control")

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant.", show_default=False)]
AgentOption = Annotated[str | None, typer.Option(
    "--agent", help="Only this agent (every session of it).", show_default=False)]
SessionOption = Annotated[str | None, typer.Option(
    "--session", help="Only this session.", show_default=False)]
ByOption = Annotated[str | None, typer.Option(
    "--by", help="Who does it (default: your user name).", show_default=False)]
BootstrapOption = Annotated[str | None, typer.Option(
    "--bootstrap-servers", help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS; default "
    "localhost:9092).", show_default=False)]


def _control(action: str, tenant: str, agent: str | None, session: str | None,
             reason: str | None, by: str | None, bootstrap_servers: str | None) -> None:
    from agentwatch.cli._control import (  # noqa: PLC0415
        ControlSettings,
        operator_record,
        write_control,
    )
    from agentwatch.schemas import ControlAction  # noqa: PLC0415

    record = operator_record(ControlAction(action), tenant=tenant, agent=agent,
                             session=session, reason=reason, by=by)
    settings = ControlSettings.from_env(bootstrap_servers=bootstrap_servers)
    write_control(settings, record)
    print(f"{'halted' if action == 'halt' else 'resumed'} {record.scope_label} "
          f"(by {record.by}) on {settings.topic}")


@control_app.command("halt")
def control_halt(
    tenant: TenantOption,
    reason: Annotated[str, typer.Option("--reason", help="Why (one sentence; agents see it "
                                        "in AgentHalted).", show_default=False)],
    agent: AgentOption = None,
    session: SessionOption = None,
    by: ByOption = None,
    bootstrap_servers: BootstrapOption = None,
) -> None:
    """Halt a tenant, one agent of it (--agent) or one session (--session): their next
    llm_call()/tool_call() raises AgentHalted, until `agentwatch control resume`."""
    _control("halt", tenant, agent, session, reason, by, bootstrap_servers)


@control_app.command("resume")
def control_resume(
    tenant: TenantOption,
    agent: AgentOption = None,
    session: SessionOption = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (optional).",
                                               show_default=False)] = None,
    by: ByOption = None,
    bootstrap_servers: BootstrapOption = None,
) -> None:
    """Let a halted tenant, agent or session run again (an operator's or an alert's halt)."""
    _control("resume", tenant, agent, session, reason, by, bootstrap_servers)


@control_app.command("list")
def control_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.",
                                               show_default=False)] = None,
    output: Annotated[str, typer.Option(
        "--format", "-f", help="table or json (one object per line).")] = "table",
    bootstrap_servers: BootstrapOption = None,
) -> None:
    """What is halted now: scope, by whom (an operator, or the rule of an alert), why and
    since when (read from the beginning of the compacted control topic)."""
    from agentwatch.cli._control import ControlSettings, halt_row, read_halts  # noqa: PLC0415
    from agentwatch.cli._render import write_json_lines, write_table  # noqa: PLC0415

    if output not in {"table", "json"}:
        raise ConfigError(f"--format: {output!r} is not one of table, json")
    settings = ControlSettings.from_env(bootstrap_servers=bootstrap_servers)
    rows = [halt_row(h) for h in read_halts(settings, tenant)]
    if output == "json":
        write_json_lines(sys.stdout, rows)
        return
    columns = ["scope", "by", "reason", "since", "alert_id"]
    write_table(sys.stdout, columns, [[row[c] for c in columns] for row in rows],
                footer="halted now")
