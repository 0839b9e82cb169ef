"""Dedup tokens survive closing chDB and opening the same path in a new session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agentwatch.schemas import Event
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate


def _write(path: Path, events: list[Event], prefix: str) -> int:
    with ChdbBackend(path) as backend:
        migrate(backend, SchemaConfig(ttl_days=None))  # the events have fixed times
        sink = ClickHouseSink(backend)
        sink.add_events(events)
        sink.flush(dedup_token_prefix=prefix)
        return int(backend.query("SELECT count() FROM agentwatch.events").rows[0][0])


def test_a_batch_retried_after_a_restart_is_stored_once(
    tmp_path: Path, make_event: Callable[..., Event]
) -> None:
    events = [make_event(i) for i in range(50)]
    path = tmp_path / "db"
    assert _write(path, events, "p0/0-49") == 50  # then "crash" before the offset commit
    assert _write(path, events, "p0/0-49") == 50  # new session, same batch, same token
    assert _write(path, events, "p0/50-99") == 100  # a different token inserts
