"""Where `agentwatch demo` leaves its database: where `agentwatch query` looks by default,
so the newcomer's next command works as it is; a second demo replaces the first's data,
and a database the demo did not write is never touched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agentwatch.cli._demo import DEMO_DATA_DIR, _fresh_demo_store, demo_chdb_path
from agentwatch.cli._fleet import FleetPlan, fleet_events
from agentwatch.schemas import ConfigError
from agentwatch.sinks._settings import DEFAULT_CHDB_PATH

AGENTWATCH = Path(sys.executable).with_name("agentwatch")  # the installed entry point
ENV = {**os.environ, "COLUMNS": "250"}


def test_the_default_demo_store_is_the_default_query_store() -> None:
    assert demo_chdb_path(DEMO_DATA_DIR) == Path(DEFAULT_CHDB_PATH)


def test_an_earlier_demo_database_is_replaced_and_a_foreign_one_refused(tmp_path: Path) -> None:
    path = _fresh_demo_store(tmp_path / "d")
    path.mkdir()
    (path / "data.bin").write_bytes(b"x")
    assert _fresh_demo_store(tmp_path / "d") == path
    assert not path.exists()  # the earlier demo's database is gone; chDB makes a new one

    foreign = tmp_path / "mine"
    demo_chdb_path(foreign).mkdir(parents=True)
    (demo_chdb_path(foreign) / "data.bin").write_bytes(b"keep")
    with pytest.raises(ConfigError, match="was not written by `agentwatch demo`"):
        _fresh_demo_store(foreign)
    assert (demo_chdb_path(foreign) / "data.bin").read_bytes() == b"keep"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(AGENTWATCH), *args], cwd=cwd, capture_output=True, timeout=180,
                          check=False, env=ENV)


def test_after_the_demo_the_suggested_query_works_as_it_is(tmp_path: Path) -> None:
    fleet = len(list(fleet_events(FleetPlan())))
    for _ in range(2):  # twice: the second run's totals are not added to the first's
        demo = _run(tmp_path, "demo", "--duration-s", "2")
        out = demo.stdout.decode()
        assert demo.returncode == 0, out + demo.stderr.decode()
        assert f"The database stays in {DEFAULT_CHDB_PATH}. Next, try:" in out
        assert "agentwatch query --saved cost-by-agent" in out
        query = _run(tmp_path, "query", "-f", "json",
                     "SELECT count() AS n FROM agentwatch.events")
        assert query.returncode == 0, query.stderr.decode()
        # every event the producer sent (the halted loop session sends fewer than the fleet)
        sent = re.search(r"producer: ([\d,]+) emitted, \1 sent", out)
        assert sent is not None, out
        n_events = int(sent.group(1).replace(",", ""))
        assert 0 < n_events < fleet
        assert orjson.loads(query.stdout.splitlines()[0])["n"] == n_events  # one JSON row
    saved = _run(tmp_path, "query", "--saved", "cost-by-agent")
    assert saved.returncode == 0, saved.stderr.decode()
    assert "Traceback" not in saved.stderr.decode()
    # ... and so does the suggested session: the runaway loop's path, its tool calls and alerts
    assert "agentwatch session supply-loop-0001" in out
    session = _run(tmp_path, "session", "supply-loop-0001")
    assert session.returncode == 0, session.stderr.decode()
    path = session.stdout.decode()
    assert path.startswith("session supply-loop-0001")
    # one line per tool call of the session: the loop ran (>= 5 repeats fire the alert)
    # and its halt stopped it before the end of its 120 s (a call every 0.5 s: 240)
    tool_calls = re.search(r"(\d+) tool calls?\)", path)
    assert tool_calls is not None, path
    assert path.count("tool_call  reroute_shipment") == int(tool_calls.group(1))
    assert 5 <= int(tool_calls.group(1)) < 240
    assert "firing  loop_repeat" in path
    assert (tmp_path / DEFAULT_CHDB_PATH).is_dir()
