from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from agentwatch.schemas import Alert, AlertScope, AlertState, AlertType, Severity

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the local receiver must not go through a proxy from the environment."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    def make(**overrides: object) -> Alert:
        fields: dict[str, object] = {
            "alert_id": str(uuid.uuid4()),
            "rule": "session_cost",
            "type": AlertType.COST,
            "state": AlertState.FIRING,
            "severity": Severity.WARNING,
            "scope": AlertScope.SESSION,
            "key": "sess-1",
            "tenant_id": "default",
            "agent_id": "agent-1",
            "session_id": "sess-1",
            "value": 1.25,
            "threshold": 1.0,
            "window_s": 60,
            "ts": datetime(2026, 11, 20, 9, 0, 1, 250000, tzinfo=UTC),
            "reason": "Session sess-1 spent 1.25 USD in 60 s (threshold 1.00 USD).",
            "event_ids": [str(uuid.uuid4())],
        }
        fields.update(overrides)
        return Alert(**fields)  # type: ignore[arg-type]

    return make


@pytest.fixture
def alert(make_alert: Callable[..., Alert]) -> Alert:
    return make_alert()


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening on it (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def slept_s() -> list[float]:
    """Pass ``sleep=slept_s.append`` to record backoff delays instead of waiting."""
    return []
