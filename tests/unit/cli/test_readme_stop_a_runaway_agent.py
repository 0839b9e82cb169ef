"""The README's "Stop a runaway agent" snippet, run as written (its Kafka transport
swapped for the in-process log of the embedded pipeline, ``agentwatch demo``'s): the
agent's own loop ends on ``AgentHalted`` once the default ``loop_repeat`` rule fires."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path
from typing import Any

from agentwatch.cli.embedded import EmbeddedPipeline
from agentwatch.processors.core import Engine, rules_from_mapping
from agentwatch.producer import InProcessLog, InProcessTransport
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

README = (Path(__file__).parents[3] / "README.md").read_text()
MAX_CALLS = 500


def snippet() -> str:
    section = README.split("## Stop a runaway agent", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "no python block in 'Stop a runaway agent'"
    return match.group(1)


def test_the_snippet_imports_what_it_uses() -> None:
    code = snippet()
    assert code.startswith("from agentwatch.producer import AgentHalted, Agentwatch\n")
    compile(code, "README.md", "exec")


def test_the_snippet_stops_its_looping_agent(tmp_path: Path) -> None:
    code = snippet()
    kafka = 'bootstrap_servers="kafka:9092"'
    assert kafka in code
    code = code.replace(kafka, "transport=InProcessTransport(log)")
    log = InProcessLog()
    calls: list[dict[str, Any]] = []

    def reroute(order: dict[str, Any]) -> bool:
        calls.append(order)
        time.sleep(0.02)  # the tool's work: the halt comes while the agent runs
        return len(calls) >= MAX_CALLS  # never done by itself

    with ChdbBackend(tmp_path / "chdb") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        pipeline = EmbeddedPipeline(log, Engine(rules_from_mapping({})), ClickHouseSink(backend),
                                    flush_interval_s=0.05).start()
        out = io.StringIO()
        namespace: dict[str, Any] = {"InProcessTransport": InProcessTransport, "log": log,
                                     "done": False, "order": {"order": 42}, "reroute": reroute}
        try:
            with contextlib.redirect_stdout(out):
                exec(code, namespace)  # noqa: S102 - the README's own code
            namespace["aw"].close()
        finally:
            pipeline.stop()
    assert out.getvalue().startswith("stopped: session ")
    assert "called tool `reroute_shipment` 5 times with the same arguments" in out.getvalue()
    assert 5 <= len(calls) < MAX_CALLS
