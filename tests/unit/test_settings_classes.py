"""Every settings class of every distribution, against README and against each other.

README's settings tables stay true: each field read from a variable has a row naming the
variable, with the field's default; no row names a variable that no class reads. And every
class defaults to the same topic names and brokers (agentwatch.schemas.settings).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts import WEBHOOKS_ENV_VARS, WebhooksSettings
from agentwatch.cli._control import ACK_ENV_VARS, CONTROL_ENV_VARS, AckSettings, ControlSettings
from agentwatch.processors.worker import WorkerSettings
from agentwatch.processors.worker._settings import ENV_VARS as WORKER_ENV_VARS
from agentwatch.producer import ProducerSettings
from agentwatch.producer._settings import ENV as PRODUCER_ENV_VARS
from agentwatch.producer._settings import ENV_FALLBACKS as PRODUCER_FALLBACKS
from agentwatch.schemas.kafka_security import KAFKA_SECURITY_ENV_VARS, KafkaSecurity
from agentwatch.schemas.settings import (
    ACKS_TOPIC,
    ALERTS_DLQ_TOPIC,
    ALERTS_TOPIC,
    CONTROL_TOPIC,
    DEFAULT_BOOTSTRAP_SERVERS,
    EVENTS_DLQ_TOPIC,
    EVENTS_TOPIC,
)
from agentwatch.sinks import SinkSettings, StoreSettings
from agentwatch.sinks._settings import SINK_ENV_VARS, STORE_ENV_VARS

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
_VAR = re.compile(r"`([A-Z][A-Z0-9_]+)`")


@dataclass(frozen=True)
class Spec:
    cls: type[Any]
    env_vars: Mapping[str, str]
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def variables(self) -> set[str]:
        return set(self.env_vars.values()) | {v for vs in self.fallbacks.values() for v in vs}


#: README section (its "## " heading starts so) -> the classes its tables document
SECTIONS: dict[str, tuple[Spec, ...]] = {
    "## Add it to an agent": (Spec(ProducerSettings, PRODUCER_ENV_VARS, PRODUCER_FALLBACKS),),
    "## Stop a runaway agent": (Spec(ControlSettings, CONTROL_ENV_VARS),),
    "## Run on Kafka: `agentwatch worker`": (Spec(WorkerSettings, WORKER_ENV_VARS),),
    "## Store it in ClickHouse: `agentwatch sink`": (Spec(SinkSettings, SINK_ENV_VARS),
                                                     Spec(StoreSettings, STORE_ENV_VARS)),
    "## Send alerts to webhooks: `agentwatch webhooks`": (
        Spec(WebhooksSettings, WEBHOOKS_ENV_VARS), Spec(AckSettings, ACK_ENV_VARS)),
    "## A broker that requires TLS or SASL": (Spec(KafkaSecurity, KAFKA_SECURITY_ENV_VARS),),
}


@dataclass(frozen=True)
class Row:
    variables: tuple[str, ...]
    defaults: str  # the cells after the variables'
    line: str


def _section(heading: str) -> str:
    starts = [m.start() for m in re.finditer(rf"^{re.escape(heading)}", README, re.M)]
    assert len(starts) == 1, f"README has {len(starts)} sections starting {heading!r}"
    rest = README[starts[0] + len(heading):]
    end = rest.find("\n## ")
    return rest if end < 0 else rest[:end]


def _rows(heading: str) -> list[Row]:
    """The rows of the section's settings tables (a header cell 'environment...' or
    'variable' says which column names the variables)."""
    rows: list[Row] = []
    column: int | None = None
    for raw in _section(heading).splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if column is None:
            found = [i for i, c in enumerate(cells) if c.startswith("environment")
                     or c == "variable"]
            column = found[0] if found else -1
            continue
        if column < 0 or set(line) <= set("|-: "):
            continue
        rows.append(Row(tuple(_VAR.findall(cells[column])), " | ".join(cells[column + 1:]),
                        line))
    return rows


def _renderings(value: object) -> set[str]:
    if isinstance(value, bool):
        return {"true" if value else "false"}
    if isinstance(value, int):
        out = {str(value), f"{value:,}"}
        for unit, size in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
            if value >= size and value % size == 0:
                out.add(f"{value // size} {unit}")
        return out
    if isinstance(value, float):
        return {f"{value:g}"}
    return {str(value)}


def _shows(text: str, value: object) -> bool:
    return any(re.search(rf"(?<![\w.,]){re.escape(r)}(?![\w]|[.,]\d)", text)
               for r in _renderings(value))


def _documented_fields() -> list[Any]:
    return [pytest.param(heading, spec, name, id=f"{spec.cls.__name__}.{name}")
            for heading, specs in SECTIONS.items() for spec in specs for name in spec.env_vars]


@pytest.mark.parametrize(("heading", "spec", "name"), _documented_fields())
def test_every_setting_has_a_row_with_its_variable_and_default(heading: str, spec: Spec,
                                                               name: str) -> None:
    var = spec.env_vars[name]
    rows = [r for r in _rows(heading) if var in r.variables]
    assert rows, f"{heading}: no settings row names `{var}` ({spec.cls.__name__}.{name})"
    for fallback in spec.fallbacks.get(name, ()):
        assert any(fallback in r.variables for r in rows), f"{var}'s row omits `{fallback}`"
    default = {f.name: f.default for f in dataclasses.fields(spec.cls)}[name]
    if default in (None, "", dataclasses.MISSING):
        return  # computed or off: said in words ("<events>.dlq", "off", "(required)")
    assert any(_shows(r.defaults, default) for r in rows), (
        f"{heading}: the row of `{var}` does not show the default {default!r}: {rows[0].line}")


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_no_row_names_a_variable_no_class_reads(heading: str) -> None:
    read = set().union(*(spec.variables for spec in SECTIONS[heading]))
    rows = _rows(heading)
    assert rows, f"{heading}: no settings table"
    stale = {v for r in rows for v in r.variables} - read
    assert not stale, f"{heading}: rows name variables no settings class reads: {stale}"


def test_the_check_sees_a_missing_row_and_a_wrong_default() -> None:
    rows = _rows("## Run on Kafka: `agentwatch worker`")
    partitions = next(r for r in rows if "AGENTWATCH_PARTITIONS" in r.variables)
    assert _shows(partitions.defaults, 8)
    assert not _shows(partitions.defaults, 9)
    assert not _shows("100,000 events", 100)
    assert _shows("512 KiB per record", 512 * 1024)
    assert not any("AGENTWATCH_NOT_A_SETTING" in r.variables for r in rows)


def test_every_settings_class_defaults_to_the_same_topic_names() -> None:
    producer = ProducerSettings.resolve(environ={})
    assert (producer.topic, producer.control_topic) == (EVENTS_TOPIC, CONTROL_TOPIC)
    worker = WorkerSettings.from_env({})
    assert (worker.events_topic, worker.alerts_topic, worker.dlq_topic,
            worker.control_topic) == (EVENTS_TOPIC, ALERTS_TOPIC, EVENTS_DLQ_TOPIC,
                                      CONTROL_TOPIC)
    sink = SinkSettings.from_env({})
    assert sink.topics == (EVENTS_TOPIC, ALERTS_TOPIC, ALERTS_DLQ_TOPIC, CONTROL_TOPIC,
                           ACKS_TOPIC)
    hooks = WebhooksSettings.from_env({"AGENTWATCH_WEBHOOKS_FILE": "e.yaml"})
    assert (hooks.alerts_topic, hooks.dlq_topic, hooks.acks_topic) == (
        ALERTS_TOPIC, ALERTS_DLQ_TOPIC, ACKS_TOPIC)
    control, ack = ControlSettings.from_env({}), AckSettings.from_env({})
    assert (control.topic, ack.topic) == (CONTROL_TOPIC, ACKS_TOPIC)
    servers = {s.bootstrap_servers for s in (worker, sink, hooks, control, ack)}
    assert servers == {DEFAULT_BOOTSTRAP_SERVERS}


def test_services_read_the_same_variable_for_the_same_topic() -> None:
    """One variable per topic whichever process reads it (a deployment sets it once)."""
    by_topic: dict[str, set[str]] = {}
    for env_vars in (WORKER_ENV_VARS, SINK_ENV_VARS, WEBHOOKS_ENV_VARS, CONTROL_ENV_VARS,
                     ACK_ENV_VARS):
        for name, var in env_vars.items():
            if "topic" in name:
                by_topic.setdefault(var, set()).add(name)
    assert by_topic["AGENTWATCH_CONTROL_TOPIC"] == {"control_topic", "topic"}
    assert by_topic["AGENTWATCH_ACKS_TOPIC"] == {"acks_topic", "topic"}
    assert by_topic["AGENTWATCH_ALERTS_DLQ_TOPIC"] == {"alerts_dlq_topic", "dlq_topic"}
