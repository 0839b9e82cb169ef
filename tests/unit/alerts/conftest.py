from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from agentwatch.schemas import Alert

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the local receiver must not go through a proxy from the environment."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


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
