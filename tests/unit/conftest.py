"""Fixtures shared by the unit tests of the ClickHouse sinks and of alert delivery."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Severity

#: the alerts' fixed time (as tests/unit/sinks/conftest.py's T0)
ALERT_T0 = datetime(2026, 11, 20, 9, 0, 1, 250_001, tzinfo=UTC)


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    def make(**overrides: Any) -> Alert:
        fields: dict[str, Any] = {
            "alert_id": str(uuid.uuid4()),
            "rule": "session_cost",
            "type": AlertType.COST,
            "state": AlertState.FIRING,
            "severity": Severity.WARNING,
            "scope": AlertScope.SESSION,
            "key": "session-1",
            "tenant_id": "acme",
            "agent_id": "agent-a",
            "session_id": "session-1",
            "value": 1.25,
            "threshold": 1.0,
            "window_s": 60,
            "ts": ALERT_T0,
            "reason": "Session session-1 spent 1.25 USD in 60 s (limit 1.00).",
            "event_ids": [str(uuid.uuid4()), str(uuid.uuid4())],
        }
        return Alert(**(fields | overrides))

    return make
