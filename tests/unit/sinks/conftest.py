"""Fixtures for the ClickHouse layer: contract factories and a real chDB backend.

chDB runs one engine per process, so a module that needs it opens one backend
(module scope) and closes it at the end, leaving the engine free for the next.

The event times are fixed (``T0``), so every test database is created without a TTL
(``KEEP_FOREVER``): with the default 30 days, ClickHouse drops rows older than that
as they are inserted, and the tests would lose their rows once the wall clock is
30 days past ``T0``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentwatch.schemas import (
    Alert,
    Event,
    EventKind,
    EventStatus,
)
from agentwatch.sinks import ChdbBackend, SchemaConfig, migrate

T0 = datetime(2026, 11, 20, 9, 0, 1, 250_001, tzinfo=UTC)
#: The schema of every test database that holds events with fixed times.
KEEP_FOREVER = SchemaConfig(ttl_days=None)

EventFactory = Callable[..., Event]
AlertFactory = Callable[..., Alert]


@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "db"


@pytest.fixture(scope="module")
def backend(chdb_path: Path) -> Iterator[ChdbBackend]:
    """One migrated chDB backend per test module (database ``agentwatch``, no TTL)."""
    with ChdbBackend(chdb_path) as b:
        migrate(b, KEEP_FOREVER)
        yield b


@pytest.fixture
def make_event() -> EventFactory:
    """``make_event(i=0, full=False, **overrides)``: a minimal event, or one with every field."""

    def make(i: int = 0, *, full: bool = False, **overrides: Any) -> Event:
        fields: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "ts": T0 + timedelta(microseconds=i * 1_001),
            "agent_id": "agent-a",
            "session_id": f"session-{i % 7}",
            "kind": EventKind.TOOL_CALL,
        }
        if full:
            fields |= {
                "tenant_id": "acme",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": "00f067aa0ba902b7",
                "parent_span_id": "00f067aa0ba902b6",
                "name": "search",
                "status": EventStatus.ERROR,
                "error_type": "TimeoutError",
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 1200,
                "output_tokens": 340,
                "cached_input_tokens": 100,
                "reasoning_tokens": 7,
                "cost_usd": 0.0123,
                "duration_ms": 812.5,
                "tool_args_hash": "sha256:9f2c",
                "attributes": {"region": "eu", "retries": 2, "ratio": 0.25, "cached": True},
            }
        return Event(**(fields | overrides))

    return make
