"""control_log: every halt and resume, stored by the sink on chDB (migration 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agentwatch.schemas import ControlAction, ControlRecord
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

TS = datetime(2026, 11, 20, 9, 1, 2, 250000, tzinfo=UTC)


def test_halts_and_resumes_are_stored_in_control_log(tmp_path: Path) -> None:
    with ChdbBackend(tmp_path / "ch") as backend:
        migrate(backend, SchemaConfig(ttl_days=None))
        sink = ClickHouseSink(backend)
        halt = ControlRecord.by_operator(ControlAction.HALT, tenant_id="acme", agent_id="bot",
                                         reason="burning money", by="alice", ts=TS)
        resume = ControlRecord.by_operator(ControlAction.RESUME, tenant_id="acme",
                                           agent_id="bot", reason="fixed", by="bob", ts=TS)
        sink.add_control([halt, resume])
        sink.flush()
        rows = backend.query(
            "SELECT action, scope, key, tenant_id, agent_id, session_id, alert_id, reason, by, "
            "ts FROM agentwatch.control_log ORDER BY action").rows
    assert rows == [
        ("halt", "agent", "agent:acme/bot", "acme", "bot", None, None, "burning money",
         "alice", TS),
        ("resume", "agent", "agent:acme/bot", "acme", "bot", None, None, "fixed", "bob", TS),
    ]
