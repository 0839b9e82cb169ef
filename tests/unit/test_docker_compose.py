"""docker-compose.yml, the Dockerfile and the Grafana provisioning, checked without Docker.

No Docker engine runs on the CI machines, so these tests parse the files and hold them
against the code: the variables the services set are the ones the settings classes read
(and parse with them), the Kafka address is an advertised listener, the commands are real
``agentwatch`` subcommands, credentials agree between ClickHouse, the sink and Grafana,
the webhooks endpoints file loads, and every SQL statement of the Grafana dashboard runs
on chDB against a freshly migrated database (with the plugin's macros expanded the way
the plugin expands them).
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from agentwatch.alerts import WEBHOOKS_ENV_VARS, WebhooksSettings, load_endpoints
from agentwatch.cli._app import app
from agentwatch.processors.worker._settings import ENV_VARS, WorkerSettings
from agentwatch.producer import ProducerSettings
from agentwatch.producer._settings import ENV as PRODUCER_ENV
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
from agentwatch.sinks import (
    SAVED_QUERIES,
    Backend,
    ClickHouseSink,
    SinkSettings,
    StoreSettings,
    migrate,
    open_backend,
)
from agentwatch.sinks._settings import SINK_ENV_VARS, STORE_ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "agentwatch.yaml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "agentwatch.json"
ENDPOINTS_FILE = ROOT / "deploy" / "webhooks" / "endpoints.yaml"

SERVICES = {"kafka", "clickhouse", "migrate", "worker", "sink", "webhooks", "grafana", "otlp"}
AGENTWATCH_SERVICES = ("migrate", "worker", "sink", "webhooks", "otlp")
IMAGE = "agentwatch:local"
PLUGIN = "grafana-clickhouse-datasource"

#: The variables each agentwatch service's code reads (all it may set).
READS: dict[str, frozenset[str]] = {
    "worker": frozenset(ENV_VARS.values()),
    "sink": frozenset(SINK_ENV_VARS.values()) | frozenset(STORE_ENV_VARS.values()),
    "migrate": frozenset(STORE_ENV_VARS.values()),
    # and the secret_env variables its endpoints file names (see secret_env_vars)
    "webhooks": frozenset(WEBHOOKS_ENV_VARS.values()),
    "otlp": frozenset(PRODUCER_ENV.values()),  # `agentwatch otlp` sends through a producer
}

#: ``agentwatch sink`` and ``agentwatch db migrate`` are being added to the CLI in a
#: parallel change. While a command is not registered in the typer app yet, the compose
#: file's command must be exactly one of these; once it is registered, the test checks
#: the command against the app instead (and this set no longer matters).
PENDING_COMMANDS = {("sink",), ("db", "migrate")}

#: Panels the dashboard must have: title -> panel type.
EXPECTED_PANELS = {
    "Cost per agent (USD per hour)": "timeseries",
    "Error rate per agent (5 min)": "timeseries",
    "Open alerts": "table",
    "Runaway-loop incidents": "table",
    "Top sessions by cost": "table",
    "Evaluation scores vs cost per agent (per hour)": "table",
    "Tool calls outside the tool policy": "table",
}

#: The plugin's query format numbers (sqlds): 0 time series, 1 table.
FORMAT_OF_PANEL = {"timeseries": 0, "table": 1, "stat": 1}


# --- reading the files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    data = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    assert data["apiVersion"] == 1
    sources = data["datasources"]
    assert len(sources) == 1
    source: dict[str, Any] = sources[0]
    return source


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return data


def env_of(compose: dict[str, Any], service: str) -> dict[str, str]:
    """A service's environment as strings (mapping or ``KEY=value`` list syntax)."""
    raw = compose["services"][service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def depends_on(compose: dict[str, Any], service: str) -> dict[str, str]:
    """``depends_on`` as service -> condition (short syntax means service_started)."""
    raw = compose["services"][service].get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def mounts(compose: dict[str, Any], service: str) -> list[tuple[str, str]]:
    """``(source, target)`` of a service's volumes (short or long syntax)."""
    out = []
    for item in compose["services"][service].get("volumes") or []:
        if isinstance(item, str):
            source, target = item.split(":")[:2]
        else:
            source, target = item.get("source", ""), item["target"]
        out.append((source, target))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(compose: dict[str, Any], service: str, container_path: str) -> Path:
    """Where a path inside a service's container comes from on this machine (bind mounts)."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for source, target in mounts(compose, service):
        target_path = PurePosixPath(target)
        if is_bind(source) and (wanted == target_path or target_path in wanted.parents):
            depth = len(target_path.parts)
            if best is None or depth > best[0]:
                best = (depth, ROOT / source / wanted.relative_to(target_path))
    assert best is not None, f"{service}: nothing is mounted at {container_path}"
    return best[1]


def container_ports(compose: dict[str, Any], service: str) -> set[int]:
    """The container side of a service's published ports."""
    ports = set()
    for item in compose["services"][service].get("ports") or []:
        text = str(item["target"]) if isinstance(item, dict) else str(item)
        ports.add(int(text.split(":")[-1].split("/")[0]))
    return ports


def command_of(compose: dict[str, Any], service: str) -> list[str]:
    command = compose["services"][service]["command"]
    return command.split() if isinstance(command, str) else [str(word) for word in command]


# --- services, dependencies, volumes ---------------------------------------------------


def test_the_compose_file_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_every_dependency_exists_and_has_the_right_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in services:
        for dependency, condition in depends_on(compose, name).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
    assert depends_on(compose, "migrate")["clickhouse"] == "service_healthy"
    for name in ("sink", "grafana"):
        assert depends_on(compose, name)["migrate"] == "service_completed_successfully"
    for name in ("worker", "sink", "webhooks"):
        assert depends_on(compose, name)["kafka"] == "service_healthy"
    assert depends_on(compose, "sink")["clickhouse"] == "service_healthy"
    assert services["migrate"].get("restart", "no") == "no"  # a one-shot job


def test_the_dependencies_have_no_cycle(compose: dict[str, Any]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dependency in depends_on(compose, name):
                visit(dependency, (*path, name))
            done.add(name)

    for name in compose["services"]:
        visit(name, ())
    assert done == set(compose["services"])


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name in compose["services"]:
        for source, _target in mounts(compose, name):
            if is_bind(source):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_the_agentwatch_services_run_the_image_built_here(compose: dict[str, Any]) -> None:
    for name in AGENTWATCH_SERVICES:
        service = compose["services"][name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert Path(ROOT / context).resolve() == ROOT
        assert service["image"] == IMAGE


# --- settings: the variables are the code's, and they parse ---------------------------


@pytest.mark.parametrize("service", AGENTWATCH_SERVICES)
def test_services_set_only_variables_their_code_reads(
    compose: dict[str, Any], service: str
) -> None:
    env = env_of(compose, service)
    assert env, f"{service} sets no environment"
    reads = READS[service]
    if service == "webhooks":
        reads |= secret_env_vars(webhooks_endpoints_file(compose))
    unknown = set(env) - reads
    assert not unknown, f"{service} sets variables the code does not read: {sorted(unknown)}"


def test_the_worker_settings_parse(compose: dict[str, Any]) -> None:
    env = env_of(compose, "worker")
    settings = WorkerSettings.from_env(env)
    assert settings.bootstrap_servers == "kafka:19092"
    assert settings.data_dir == Path("/data")
    assert str(settings.data_dir) in {target for _source, target in mounts(compose, "worker")}
    # the events topic has the same partitions whether the broker or the worker creates it
    kafka = env_of(compose, "kafka")
    assert settings.partitions == int(kafka["KAFKA_NUM_PARTITIONS"])
    assert settings.replication_factor <= len(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert settings.store == "rocksdb"
    # ... which the image has: it installs the root project's dependencies
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "agentwatch-processors[rocksdb]" in root["project"]["dependencies"]


def test_the_sink_and_migrate_settings_parse_and_agree(compose: dict[str, Any]) -> None:
    sink_env = env_of(compose, "sink")
    sink = SinkSettings.from_env(sink_env)
    worker = WorkerSettings.from_env(env_of(compose, "worker"))
    webhooks = WebhooksSettings.from_env(env_of(compose, "webhooks"))
    assert sink.bootstrap_servers == worker.bootstrap_servers
    # what the worker writes, the deliveries the webhooks dispatcher gave up on, halts, acks
    assert sink.topics == (worker.events_topic, worker.alerts_topic, webhooks.dlq_topic,
                           worker.control_topic, webhooks.acks_topic)
    assert sink.group_id != worker.group_id  # separate consumer groups: both read everything
    assert "AGENTWATCH_SINK_BATCH_MAX_EVENTS" in sink_env
    assert "AGENTWATCH_SINK_BATCH_MAX_MS" in sink_env
    assert sink.batch_max_events == int(sink_env["AGENTWATCH_SINK_BATCH_MAX_EVENTS"])
    assert sink.batch_max_ms == int(sink_env["AGENTWATCH_SINK_BATCH_MAX_MS"])

    store = StoreSettings.from_env(sink_env)
    # migrate prepares exactly the database the sink writes to
    assert StoreSettings.from_env(env_of(compose, "migrate")) == store
    assert not store.is_embedded
    url = urlsplit(store.url)
    assert url.scheme == "http"
    assert url.hostname in compose["services"]
    assert compose["services"][url.hostname or ""]["image"].startswith("clickhouse/")
    assert url.port == 8123  # the server's HTTP port (clickhouse-connect speaks HTTP)


def test_the_otlp_receiver_settings_parse_and_agree(compose: dict[str, Any]) -> None:
    producer = ProducerSettings.resolve(environ=env_of(compose, "otlp"))
    worker = WorkerSettings.from_env(env_of(compose, "worker"))
    sink = SinkSettings.from_env(env_of(compose, "sink"))
    assert producer.bootstrap_servers == worker.bootstrap_servers
    # the spans' events go where the worker and the sink read events
    assert producer.topic == worker.events_topic == sink.topics[0]
    assert producer.spool_dir is not None
    words = command_of(compose, "otlp")
    # listening on every interface of its container, on the port compose publishes
    assert words[words.index("--host") + 1] == "0.0.0.0"  # noqa: S104 -- inside its container
    port = int(words[words.index("--port") + 1])
    assert port == 4318
    assert port in container_ports(compose, "otlp")
    assert depends_on(compose, "otlp")["kafka"] == "service_healthy"


# --- the webhooks dispatcher and its endpoints file -------------------------------------


def webhooks_endpoints_file(compose: dict[str, Any]) -> Path:
    """The endpoints file the webhooks service reads, on this machine."""
    settings = WebhooksSettings.from_env(env_of(compose, "webhooks"))
    return host_path(compose, "webhooks", settings.endpoints_file)


def secret_env_vars(path: Path) -> frozenset[str]:
    """The ``secret_env`` variables an endpoints file names (read as plain YAML)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return frozenset(e["secret_env"] for e in data["endpoints"] if "secret_env" in e)


def uncommented(text: str) -> str:
    """The endpoints file with its commented-out examples switched on: optional keys of an
    endpoint (``    # key: value``) and whole commented endpoints (``  # - name: ...`` and
    the ``  #   ...`` lines under it)."""
    lines, in_example = [], False
    for line in text.splitlines():
        key = re.match(r"^( {4,})# (\w+: .*)$", line)
        if re.match(r"^  # - name: ", line):
            in_example = True
        elif not line.startswith("  #   "):
            in_example = False
        if in_example:
            lines.append("  " + line.removeprefix("  # "))
        elif key:
            lines.append(key.group(1) + key.group(2))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_webhooks_settings_parse_and_agree(compose: dict[str, Any]) -> None:
    env = env_of(compose, "webhooks")
    webhooks = WebhooksSettings.from_env(env)
    worker = WorkerSettings.from_env(env_of(compose, "worker"))
    sink = SinkSettings.from_env(env_of(compose, "sink"))
    assert webhooks.bootstrap_servers == worker.bootstrap_servers
    assert webhooks.alerts_topic == worker.alerts_topic  # it reads what the worker writes
    # its own consumer group: the sink and the dispatcher both read every alert
    assert webhooks.group_id not in {worker.group_id, sink.group_id}
    assert webhooks.dlq_topic not in {worker.events_topic, worker.alerts_topic}
    assert webhooks.dlq_topic != (worker.dlq_topic or f"{worker.events_topic}.dlq")
    # the endpoints file is this repository's, mounted read-only
    assert webhooks_endpoints_file(compose).resolve() == ENDPOINTS_FILE.resolve()
    ((_source, target, *options),) = [
        item.split(":") for item in compose["services"]["webhooks"]["volumes"]
    ]
    assert target == webhooks.endpoints_file
    assert options == ["ro"]


def published_ports(compose: dict[str, Any], service: str) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of a service's ``HOST:PORT:PORT``
    (or ``PORT:PORT``) short-syntax ports."""
    out = {}
    for item in compose["services"][service].get("ports") or []:
        *host, container = str(item).split("/")[0].split(":")
        address = host[0] if len(host) == 2 else "0.0.0.0"  # noqa: S104 - compose's default
        out[int(container)] = (address, int(host[-1]) if host else int(container))
    return out


def test_the_webhooks_ack_link_server_is_on_and_published_locally(
    compose: dict[str, Any],
) -> None:
    env = env_of(compose, "webhooks")
    ack_vars = {v for k, v in WEBHOOKS_ENV_VARS.items() if k.startswith("ack")}
    assert ack_vars <= set(env), f"webhooks: not set: {sorted(ack_vars - set(env))}"
    webhooks = WebhooksSettings.from_env(env)
    links = webhooks.ack_links()
    assert links is not None  # firings carry links
    host, _, port_text = webhooks.ack_listen.rpartition(":")
    port = int(port_text)
    assert host == "0.0.0.0"  # noqa: S104 - inside the container: reachable through the port
    ports = published_ports(compose, "webhooks")
    assert port in ports, f"webhooks: the ack server's port {port} is not published"
    address, host_port = ports[port]
    assert address == "127.0.0.1"  # this machine only, until a proxy is put in front
    base = urlsplit(links.base_url)
    assert base.hostname in {"localhost", "127.0.0.1"}
    assert base.port == host_port  # the links point where the server is published
    assert webhooks.ack_ttl_s >= 3600  # a link outlives a night's page


def test_the_sink_stores_the_acks_the_dispatcher_reads(compose: dict[str, Any]) -> None:
    sink_env, webhooks_env = env_of(compose, "sink"), env_of(compose, "webhooks")
    var = WEBHOOKS_ENV_VARS["acks_topic"]
    assert sink_env[var] == webhooks_env[var] != ""
    sink = SinkSettings.from_env(sink_env)
    assert WebhooksSettings.from_env(webhooks_env).acks_topic in sink.topics


def test_the_mounted_endpoints_file_loads(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(compose, "webhooks")
    names = secret_env_vars(ENDPOINTS_FILE)
    assert names, "the example endpoints file should show secret_env"
    for name in names:
        # passed through from the shell of `docker compose up` (a key without a value),
        # never written into docker-compose.yml
        assert name in env, f"webhooks: {name} (a secret_env of the endpoints file) is not set"
        assert env[name] == "", f"webhooks: {name} should come from the shell, not the file"
        monkeypatch.setenv(name, f"test-secret-{name}")
    endpoints = load_endpoints(webhooks_endpoints_file(compose))
    assert [e.format for e in endpoints] == ["json"]
    (endpoint,) = endpoints
    assert endpoint.secret_env in names
    assert endpoint.secret == f"test-secret-{endpoint.secret_env}"
    assert endpoint.webhook_endpoint().url == endpoint.url


def test_the_commented_examples_of_the_endpoints_file_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = uncommented(ENDPOINTS_FILE.read_text(encoding="utf-8"))
    assert text != ENDPOINTS_FILE.read_text(encoding="utf-8")
    switched_on = tmp_path / "endpoints.yaml"
    switched_on.write_text(text, encoding="utf-8")
    for name in secret_env_vars(switched_on):
        monkeypatch.setenv(name, "test-secret")
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "test-routing-key")
    endpoints = {e.name: e for e in load_endpoints(switched_on)}
    assert [e.format for e in endpoints.values()] == ["json", "slack", "pagerduty"]
    slack = endpoints["team-slack"]
    assert slack.link_template
    assert "{tenant_id}" in slack.link_template
    assert (slack.escalate_to, slack.escalate_after_s) == ("pagerduty", 600)
    assert endpoints["pagerduty"].routing_key == "test-routing-key"
    # the optional keys show their defaults
    json_endpoint = next(e for e in endpoints.values() if e.format == "json")
    defaults = {
        name: field.default
        for name, field in type(json_endpoint).model_fields.items()
        if name in {"max_attempts", "backoff_initial_s", "backoff_max_s", "concurrency"}
    }
    assert len(defaults) == 4
    for name, default in defaults.items():
        assert getattr(json_endpoint, name) == default, name


def test_uncommented_switches_on_keys_and_whole_endpoints() -> None:
    text = (
        "endpoints:\n"
        "  - name: a\n"
        "    # max_attempts: 3   # note\n"
        "    # just a comment\n"
        "  # A comment about b.\n"
        "  # - name: b\n"
        "  #   url: https://b.example/\n"
        "# the end\n"
    )
    assert uncommented(text) == (
        "endpoints:\n"
        "  - name: a\n"
        "    max_attempts: 3   # note\n"
        "    # just a comment\n"
        "  # A comment about b.\n"
        "  - name: b\n"
        "    url: https://b.example/\n"
        "# the end\n"
    )


def test_clickhouse_credentials_agree_everywhere(
    compose: dict[str, Any], datasource: dict[str, Any]
) -> None:
    server = env_of(compose, "clickhouse")
    store = StoreSettings.from_env(env_of(compose, "sink"))
    assert (store.user, store.password, store.database) == (
        server["CLICKHOUSE_USER"],
        server["CLICKHOUSE_PASSWORD"],
        server["CLICKHOUSE_DB"],
    )
    assert datasource["jsonData"]["username"] == server["CLICKHOUSE_USER"]
    assert datasource["secureJsonData"]["password"] == server["CLICKHOUSE_PASSWORD"]
    assert datasource["jsonData"]["defaultDatabase"] == server["CLICKHOUSE_DB"]


def test_services_use_an_advertised_kafka_listener(compose: dict[str, Any]) -> None:
    kafka = env_of(compose, "kafka")
    advertised = dict(
        item.split("://", 1) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    listeners = dict(item.split("://", 1) for item in kafka["KAFKA_LISTENERS"].split(","))
    protocols = dict(
        item.split(":", 1) for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    kafka_names = {"kafka", compose["services"]["kafka"].get("hostname", "kafka")}
    variables = ("KAFKA_BOOTSTRAP_SERVERS", "AGENTWATCH_BOOTSTRAP_SERVERS")  # the producer's
    users = [
        (name, variable) for name in compose["services"] for variable in variables
        if variable in env_of(compose, name)
    ]
    assert {name for name, _ in users} >= {"worker", "sink", "otlp"}
    for name, variable in users:
        for server in env_of(compose, name)[variable].split(","):
            matching = [listener for listener, address in advertised.items() if address == server]
            assert matching, f"{name}: {server} is not an advertised listener of kafka"
            listener = matching[0]
            host, port = server.rsplit(":", 1)
            # inside a container, localhost is the container itself
            assert host in kafka_names, f"{name}: {server} is not reachable from a container"
            assert listeners[listener].endswith(f":{port}")
            assert protocols[listener] == "PLAINTEXT"
    # the host-side listener is published on the same port
    host_listeners = [a for a in advertised.values() if a.startswith("localhost:")]
    assert host_listeners
    for address in host_listeners:
        assert int(address.rsplit(":", 1)[1]) in container_ports(compose, "kafka")


# --- commands ---------------------------------------------------------------------------


def subcommands(command: Any) -> dict[str, Any] | None:
    """A command group's subcommands by name; None for a plain command. (Duck-typed: typer
    builds on its own copy of click in some versions, so no isinstance checks.)"""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def resolve(group: Any, words: list[str]) -> tuple[str, ...] | None:
    """The subcommand path ``words`` names in the CLI, or None when its first word is not
    registered. A path that names a group (unless the group runs by itself, as
    ``agentwatch webhooks`` does), or an unknown subcommand of one, fails."""
    top = subcommands(group)
    assert top is not None
    if words[0] not in top:
        return None
    path: list[str] = []
    command = group
    for word in words:
        commands = subcommands(command)
        if commands is None or (path and word.startswith("-")):
            break  # the rest are the command's own arguments
        assert word in commands, f"agentwatch {' '.join(path)}: no subcommand {word}"
        command = commands[word]
        path.append(word)
    runs_alone = getattr(command, "invoke_without_command", False) is True
    assert subcommands(command) is None or runs_alone, f"agentwatch {' '.join(path)} is a group"
    return tuple(path)


@pytest.mark.parametrize("service", AGENTWATCH_SERVICES)
def test_service_commands_are_agentwatch_subcommands(compose: dict[str, Any], service: str) -> None:
    words = command_of(compose, service)
    assert words[0] == "agentwatch"
    assert len(words) > 1
    path = resolve(typer.main.get_command(app), words[1:])
    if path is None:  # not registered yet (see PENDING_COMMANDS)
        assert tuple(words[1:]) in PENDING_COMMANDS, f"{service}: unknown command {words}"
    expected = {
        "migrate": ("db", "migrate"),
        "worker": ("worker",),
        "sink": ("sink",),
        "webhooks": ("webhooks",),
        "otlp": ("otlp",),
    }
    assert tuple(words[1 : 1 + len(expected[service])]) == expected[service]


def test_resolve_refuses_unknown_subcommands_and_groups() -> None:
    db = typer.Typer()
    db.command("migrate")(lambda: None)
    db.command("status")(lambda: None)
    cli = typer.Typer()
    cli.add_typer(db, name="db")
    cli.command("sink")(lambda: None)
    group = typer.main.get_command(cli)
    assert resolve(group, ["sink"]) == ("sink",)
    assert resolve(group, ["db", "migrate", "--dry-run"]) == ("db", "migrate")
    assert resolve(group, ["no-such-command"]) is None
    with pytest.raises(AssertionError, match="no subcommand"):
        resolve(group, ["db", "migrat"])
    with pytest.raises(AssertionError, match="is a group"):
        resolve(group, ["db"])
    assert resolve(typer.main.get_command(app), ["worker"]) == ("worker",)


def test_resolve_accepts_a_group_that_runs_by_itself() -> None:
    hooks = typer.Typer(invoke_without_command=True)
    hooks.callback()(lambda: None)
    hooks.command("test")(lambda: None)
    cli = typer.Typer()
    cli.add_typer(hooks, name="webhooks")
    cli.command("sink")(lambda: None)
    group = typer.main.get_command(cli)
    assert resolve(group, ["webhooks"]) == ("webhooks",)
    assert resolve(group, ["webhooks", "--endpoints", "f.yaml"]) == ("webhooks",)
    assert resolve(group, ["webhooks", "test", "http://x/"]) == ("webhooks", "test")


# --- the image ------------------------------------------------------------------------


def test_the_dockerfile_copies_what_uv_sync_frozen_needs() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members = root["tool"]["uv"]["workspace"]["members"]
    sync = re.search(r"^(?!#).*\buv sync --frozen", text, re.MULTILINE)
    assert sync
    first_sync = sync.start()
    assert re.search(r"^COPY pyproject\.toml uv\.lock \./$", text, re.MULTILINE)
    for member in members:
        manifest = re.search(rf"^COPY {member}/pyproject\.toml {member}/$", text, re.MULTILINE)
        assert manifest, f"the Dockerfile does not copy {member}/pyproject.toml"
        assert manifest.start() < first_sync  # the dependency layer needs every manifest
        assert re.search(rf"^COPY {member}/ {member}/$", text, re.MULTILINE), member
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert "--no-default-groups" in text  # no bench group (quixstreams, ...) in the image
    # the detection core is compiled by the script `make setup` runs
    assert re.search(r"^COPY tools/build_core\.py tools/$", text, re.MULTILINE)
    assert "python tools/build_core.py" in text
    assert "build-essential" in text
    # the same uv as the Makefile
    make_uv = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert make_uv
    assert f"ARG UV_VERSION={make_uv.group(1)}" in text


def test_the_dockerignore_keeps_host_state_out_and_sources_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".git", ".venv", ".tools", "**/__pycache__", "**/*.so", "**/agentwatch-data"):
        assert must in patterns
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = [source.rstrip("/") for line in copied for source in line.split()]
    assert "uv.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        for pattern in patterns:
            assert not fnmatch.fnmatch(source, pattern.removeprefix("**/")), (source, pattern)


# --- Grafana ----------------------------------------------------------------------------


def test_grafana_is_pinned_with_the_plugin_and_the_provisioning_mounted(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["grafana"]
    image, _, tag = service["image"].partition(":")
    assert image == "grafana/grafana-oss"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"unpinned Grafana image {service['image']}"
    assert 3000 in container_ports(compose, "grafana")
    env = env_of(compose, "grafana")
    installs = " ".join(
        env.get(var, "")
        for var in ("GF_INSTALL_PLUGINS", "GF_PLUGINS_PREINSTALL", "GF_PLUGINS_PREINSTALL_SYNC")
    )
    assert PLUGIN in installs
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    # the provisioning files Grafana reads are this repository's
    for container_path, expected in (
        ("/etc/grafana/provisioning/datasources/clickhouse.yaml", DATASOURCE_FILE),
        ("/etc/grafana/provisioning/dashboards/agentwatch.yaml", PROVIDER_FILE),
        (env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"], DASHBOARD_FILE),
    ):
        assert host_path(compose, "grafana", container_path).resolve() == expected.resolve()
    provider = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    folder = host_path(compose, "grafana", entry["options"]["path"])
    assert (folder / DASHBOARD_FILE.name).resolve() == DASHBOARD_FILE.resolve()


def test_the_grafana_datasource_points_at_the_clickhouse_service(
    compose: dict[str, Any], datasource: dict[str, Any]
) -> None:
    assert datasource["type"] == PLUGIN
    assert datasource["uid"]
    data = datasource["jsonData"]
    assert data["host"] in compose["services"]
    assert compose["services"][data["host"]]["image"].startswith("clickhouse/")
    # the server's ports inside the compose network (the image's defaults)
    assert int(data["port"]) == {"native": 9000, "http": 8123}[data["protocol"]]
    assert data.get("secure", False) is False


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def test_the_dashboard_has_the_panels(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    assert dashboard["uid"]
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert len(panels) == len(dashboard["panels"])  # titles are unique
    for title, kind in EXPECTED_PANELS.items():
        assert title in panels, f"no panel {title!r}"
        assert panels[title]["type"] == kind
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel, target in panel_targets(dashboard):
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert target["datasource"] == {"type": PLUGIN, "uid": datasource["uid"]}
        assert target["editorType"] == "sql"
        assert target["rawSql"].strip()
        assert target["format"] == FORMAT_OF_PANEL[panel["type"]], panel["title"]
    (tenant,) = [v for v in dashboard["templating"]["list"] if v["name"] == "tenant"]
    assert tenant["datasource"]["uid"] == datasource["uid"]
    assert tenant["multi"]
    assert tenant["includeAll"]


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every SQL statement of the dashboard: panel title (or variable) -> SQL."""
    queries = {panel["title"]: target["rawSql"] for panel, target in panel_targets(dashboard)}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries[f"${variable['name']}"] = query if isinstance(query, str) else query["rawSql"]
    return queries


def test_the_dashboard_reads_only_the_bi_views(dashboard: dict[str, Any]) -> None:
    views = {saved.view for saved in SAVED_QUERIES.values()}
    for name, sql in dashboard_queries(dashboard).items():
        tables = re.findall(r"\bagentwatch\.(\w+)", sql)
        assert tables, name
        assert set(tables) <= views, f"{name} reads {set(tables) - views}"
        if not name.startswith("$"):
            assert re.search(
                r"\$__conditionalAll\(.*\$\{tenant:singlequote\}.*,\s*\$tenant\)", sql
            ), f"{name} ignores the tenant variable"


# --- the dashboard's SQL on a real (embedded) ClickHouse ------------------------------

# One clock reading for the time range and the sample data: read twice, a suite that runs
# for more than ~25 minutes between collection and this module put the sample past TIME_TO.
NOW = datetime.now(UTC).replace(microsecond=0)
TIME_FROM = NOW - timedelta(hours=6)
TIME_TO = NOW + timedelta(minutes=5)
TENANT = "acme"


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level arguments of the macro call whose "(" is at ``open_paren``, and the
    index just after its ")" (what the plugin's getMacroArgs does)."""
    depth, start, args = 0, open_paren + 1, []
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:index])
                return args, index + 1
        elif char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
    raise AssertionError(f"unbalanced macro call in {sql!r}")


def expand(sql: str, tenants: list[str] | None) -> str:
    """The SQL the plugin sends to ClickHouse for the time range above and the tenant
    variable set to ``tenants`` (None: "All").

    Front end: ``$__conditionalAll(phrase, $var)`` -> ``1=1`` when the variable is All,
    else the phrase; then the variables (``${tenant:singlequote}``, ``$tenant``). Back end
    (pkg/macros/macros.go): ``$__timeFilter(col)`` -> ``col >= toDateTime(from) AND col <=
    toDateTime(to)``, ``$__fromTime`` / ``$__toTime`` -> ``toDateTime(...)``,
    ``$__timeInterval(col)`` -> ``toStartOfInterval(toDateTime(col), INTERVAL n second)``.
    """
    macro = "$__conditionalAll("
    while (at := sql.rfind(macro)) != -1:
        args, end = _macro_args(sql, at + len(macro) - 1)
        assert len(args) == 2, args
        sql = sql[:at] + ("1=1" if tenants is None else args[0]) + sql[end:]
    quoted = ",".join(f"'{tenant}'" for tenant in tenants or [])
    sql = re.sub(r"\$\{tenant(:singlequote)?\}|\$tenant\b", quoted, sql)
    start, stop = int(TIME_FROM.timestamp()), int(TIME_TO.timestamp())
    for name, expansion in (
        ("timeFilter", lambda col: f"{col} >= toDateTime({start}) AND {col} <= toDateTime({stop})"),
        ("timeInterval", lambda col: f"toStartOfInterval(toDateTime({col}), INTERVAL 60 second)"),
    ):
        while (at := sql.find(f"$__{name}(")) != -1:
            args, end = _macro_args(sql, at + len(name) + 3)
            assert len(args) == 1, args
            sql = sql[:at] + expansion(args[0].strip()) + sql[end:]
    sql = re.sub(r"\$__fromTime\b", f"toDateTime({start})", sql)
    sql = re.sub(r"\$__toTime\b", f"toDateTime({stop})", sql)
    sql = re.sub(r"\$__interval_s\b", "60", sql)
    assert "$" not in sql, f"a macro or variable this test does not know: {sql}"
    return sql


def test_expand_matches_the_plugin() -> None:
    start, stop = int(TIME_FROM.timestamp()), int(TIME_TO.timestamp())
    sql = (
        "SELECT 1 WHERE $__timeFilter(ts)"
        " AND $__conditionalAll(t IN (${tenant:singlequote}), $tenant)"
    )
    assert expand(sql, None) == (
        f"SELECT 1 WHERE ts >= toDateTime({start}) AND ts <= toDateTime({stop}) AND 1=1"
    )
    assert expand(sql, ["a", "b"]).endswith("AND t IN ('a','b')")
    with pytest.raises(AssertionError, match="does not know"):
        expand("SELECT $__unknownMacro(x)", None)


def _sample(now: datetime) -> tuple[list[Event], list[Alert]]:
    """A few minutes of two agents of tenant acme: costs, errors, a loop, a cost and a
    tool-policy alert."""
    events = []
    for i in range(40):
        agent = "concierge" if i % 2 else "router"
        llm = i % 4 < 2
        events.append(
            Event(
                event_id=str(uuid.uuid4()),
                ts=now - timedelta(minutes=20) + timedelta(seconds=15 * i),
                tenant_id=TENANT,
                agent_id=agent,
                session_id=f"{agent}-session-{i % 3}",
                kind=EventKind.LLM_CALL if llm else EventKind.TOOL_CALL,
                name=None if llm else "search",
                status=EventStatus.ERROR if i % 5 == 0 else EventStatus.OK,
                model="gpt-4o" if llm else None,
                input_tokens=1200 if llm else None,
                output_tokens=80 if llm else None,
                cost_usd=0.02 * (i + 1) if llm else None,
            )
        )
    events += [  # evaluation scores of the concierge (the scores panel)
        Event(event_id=str(uuid.uuid4()), ts=now - timedelta(minutes=15, seconds=-i),
              tenant_id=TENANT, agent_id="concierge", session_id="concierge-session-1",
              kind=EventKind.SCORE, name="helpfulness",
              attributes={"gen_ai.evaluation.score.value": 0.5 + i / 10})
        for i in range(3)
    ]
    loop = Alert(
        alert_id=str(uuid.uuid4()),
        rule="loop_repeat",
        type=AlertType.RUNAWAY_LOOP,
        state=AlertState.FIRING,
        severity=Severity.CRITICAL,
        scope=AlertScope.SESSION,
        key="router-session-0",
        tenant_id=TENANT,
        agent_id="router",
        session_id="router-session-0",
        value=5.0,
        threshold=5.0,
        window_s=120,
        ts=now - timedelta(minutes=10),
        reason="search called 5 times with the same arguments in 120 s.",
        event_ids=[events[0].event_id],
    )
    cost = loop.model_copy(
        update={
            "alert_id": str(uuid.uuid4()),
            "rule": "session_cost",
            "type": AlertType.COST,
            "severity": Severity.WARNING,
            "value": 1.25,
            "threshold": 1.0,
            "window_s": 60,
            "reason": "Session router-session-0 spent 1.25 USD in 60 s (limit 1.00).",
        }
    )
    policy = loop.model_copy(
        update={
            "alert_id": str(uuid.uuid4()),
            "rule": "tool_policy",
            "type": AlertType.TOOL_POLICY,
            "key": "router-session-2",
            "session_id": "router-session-2",
            "value": 1.0,
            "threshold": 0.0,
            "window_s": None,
            "reason": "Session router-session-2 of agent router called a tool outside its "
                      "policy: `search` is not on the allow-list of agent router.",
            "event_ids": [events[2].event_id],  # a search call of router-session-2
        }
    )
    return events, [loop, cost, policy]


@pytest.fixture(scope="module")
def bi_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A freshly migrated chDB database with a little data (chDB: one per process, closed
    at the end of the module)."""
    with open_backend(tmp_path_factory.mktemp("compose-chdb") / "db") as backend:
        migrate(backend)
        sink = ClickHouseSink(backend)
        events, alerts = _sample(NOW)
        sink.add_events(events)
        sink.add_alerts(alerts)
        sink.flush()
        yield backend


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return sorted(dashboard_queries(dashboard).items())


@pytest.mark.parametrize(("name", "sql"), _queries(), ids=[name for name, _ in _queries()])
def test_every_dashboard_query_runs_on_a_migrated_database(
    bi_backend: Backend, dashboard: dict[str, Any], name: str, sql: str
) -> None:
    kinds = {panel["title"]: panel["type"] for panel in dashboard["panels"]}
    for tenants in (None, [TENANT], [TENANT, "other"]):
        result = bi_backend.query(expand(sql, tenants))
        assert result.rows, f"{name} ({tenants}): no rows on the sample data"
        if kinds.get(name) == "timeseries":
            assert result.column_names[0] == "time"
        if kinds.get(name) == "stat":
            ((value,),) = result.rows
            assert value > 0, name
    if name.startswith("$"):
        assert bi_backend.query(expand(sql, None)).rows == [(TENANT,)]
        return
    # another tenant's dashboard shows none of acme's data
    rows = bi_backend.query(expand(sql, ["nobody"])).rows
    assert all(not any(value for value in row) for row in rows), f"{name} leaks: {rows}"


# --- Prometheus and the pipeline dashboard ----------------------------------------------

PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PIPELINE_FILE = GRAFANA / "dashboards" / "pipeline.json"
METRICS_MODULES = (
    ROOT / "stream_processors/src/agentwatch/processors/worker/_metrics.py",
    ROOT / "sinks/src/agentwatch/sinks/kafka/_metrics.py",
    ROOT / "alerts/src/agentwatch/alerts/_metrics.py",
    ROOT / "cli/src/agentwatch/cli/_otlp_metrics.py",
)
#: service -> the variable naming its metrics port
METRICS_PORT_VARS = {
    "worker": "AGENTWATCH_WORKER_METRICS_PORT",
    "sink": "AGENTWATCH_SINK_METRICS_PORT",
    "webhooks": "AGENTWATCH_WEBHOOKS_METRICS_PORT",
}
#: scrape jobs of services this compose file may not have yet: the OTLP receiver's service
#: comes with issue 19's OTLP items; its job is checked as soon as the service exists
OPTIONAL_JOBS = {"otlp"}
_SUFFIXES = re.compile(r"_(total|bucket|count|sum)$")


def scrape_targets() -> dict[str, tuple[str, int]]:
    """job -> (host, port) of deploy/prometheus/prometheus.yml (one target each)."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    out = {}
    for job in config["scrape_configs"]:
        ((target,),) = [c["targets"] for c in job["static_configs"]]
        host, _, port = target.rpartition(":")
        out[job["job_name"]] = (host, int(port))
    return out


def otlp_port(compose: dict[str, Any]) -> int:
    words = command_of(compose, "otlp")
    return int(words[words.index("--port") + 1]) if "--port" in words else 4318


def test_prometheus_scrapes_every_service_on_its_metrics_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    targets = scrape_targets()
    assert set(METRICS_PORT_VARS) <= set(targets)
    for job, (host, port) in targets.items():
        if host not in services:
            assert job in OPTIONAL_JOBS, f"job {job} scrapes {host}, not a compose service"
            continue
        if host == "otlp":
            assert port == otlp_port(compose)
            continue
        env = env_of(compose, host)
        var = METRICS_PORT_VARS[host]
        assert int(env[var]) == port, f"{host} serves /metrics on {env.get(var)}, not {port}"
    # the ports parse as the services' settings
    assert WorkerSettings.from_env(env_of(compose, "worker")).metrics_port == targets["worker"][1]
    assert SinkSettings.from_env(env_of(compose, "sink")).metrics_port == targets["sink"][1]


def test_prometheus_is_pinned_and_reads_this_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    image, _, tag = service["image"].partition(":")
    assert image == "prom/prometheus"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"unpinned Prometheus image {service['image']}"
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    container_path = config_arg.removeprefix("--config.file=")
    assert host_path(compose, "prometheus", container_path).resolve() == PROMETHEUS_FILE.resolve()
    assert 9090 in container_ports(compose, "prometheus")
    assert "prometheus" in depends_on(compose, "grafana")


def test_the_prometheus_datasource_points_at_the_prometheus_service(
    compose: dict[str, Any],
) -> None:
    provisioned = yaml.safe_load(PROMETHEUS_DATASOURCE_FILE.read_text(encoding="utf-8"))
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus"
    assert url.port in container_ports(compose, "prometheus")
    assert host_path(
        compose, "grafana", "/etc/grafana/provisioning/datasources/prometheus.yaml"
    ).resolve() == PROMETHEUS_DATASOURCE_FILE.resolve()


def pipeline_metric_names() -> set[str]:
    """The agentwatch metric families the pipeline dashboard's queries read."""
    dashboard = json.loads(PIPELINE_FILE.read_text(encoding="utf-8"))
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= {_SUFFIXES.sub("", n) for n in re.findall(r"\bagentwatch_\w+", target["expr"])}
    return names


def test_the_pipeline_dashboard_reads_prometheus_and_every_service() -> None:
    dashboard = json.loads(PIPELINE_FILE.read_text(encoding="utf-8"))
    provisioned = yaml.safe_load(PROMETHEUS_DATASOURCE_FILE.read_text(encoding="utf-8"))
    uid = provisioned["datasources"][0]["uid"]
    assert dashboard["title"] == "agentwatch pipeline"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    prefixes = {n.split("_")[1] for n in pipeline_metric_names()}
    assert prefixes == {"worker", "sink", "webhooks", "otlp"}


def test_the_pipeline_dashboard_reads_only_metrics_the_services_define() -> None:
    defined = {
        name for module in METRICS_MODULES
        for name in re.findall(r'"(agentwatch_\w+)"', module.read_text(encoding="utf-8"))
    }
    assert pipeline_metric_names() <= defined, pipeline_metric_names() - defined


def test_the_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    defined = {
        name for module in METRICS_MODULES
        for name in re.findall(r'"(agentwatch_\w+)"', module.read_text(encoding="utf-8"))
    }
    listed = {_SUFFIXES.sub("", n) for n in re.findall(r"`(agentwatch_\w+)", readme)}
    assert defined <= listed, f"not in the README: {sorted(defined - listed)}"
