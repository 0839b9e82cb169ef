"""The ``agentwatch`` command: one name, subcommands per job."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Annotated

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
        "--data-dir", help="Keep the chDB database here (default: a temporary directory).",
        show_default=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole pipeline in this process on a simulated fleet of agents.

    Producer -> in-process log -> detection core -> chDB (events, alerts) and a signed
    webhook to a receiver on 127.0.0.1. No Kafka, no ClickHouse server needed.
    """
    from agentwatch.cli._demo import run_demo  # noqa: PLC0415 -- keep `--help` fast

    raise typer.Exit(run_demo(duration_s=duration_s, data_dir=data_dir, rules_path=config))


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
    from agentwatch.processors.replay import replay_lines  # noqa: PLC0415

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
        stats = replay_lines(sys.stdin.buffer, engine, on_alert, on_invalid)
    else:
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
        with handle:
            stats = replay_lines(handle, engine, on_alert, on_invalid)
    out.flush()
    es = engine.stats
    print(
        f"replay: {stats.events} events from {stats.lines} lines, {stats.invalid} invalid; "
        f"{es.alerts_fired} alerts fired, {es.alerts_resolved} resolved, {es.firing} still "
        f"firing; {es.duplicates} duplicates, {es.late} late, {es.unpriced} unpriced",
        file=err,
    )


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
    from agentwatch.processors.worker._run import run_worker  # noqa: PLC0415

    settings = WorkerSettings.from_env(
        bootstrap_servers=bootstrap_servers, group_id=group_id, data_dir=data_dir,
        store=store, rules_file=config)
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
