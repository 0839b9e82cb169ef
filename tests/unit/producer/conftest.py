"""Fixtures for the producer tests: a clean environment, collectors, misbehaving transports."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

import pytest

from agentwatch.producer import Record
from agentwatch.producer.testing import Collector, collector

# A test that goes wrong must fail, not hang: every wait in a fake has this bound.
SAFETY_TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AGENTWATCH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def aw() -> Iterator[Collector]:
    client = collector(agent_id="test-agent", tenant_id="acme", linger_ms=5)
    yield client
    client.close()


class BlockingTransport:
    """send() and flush() block until released; ``entered`` is set once send() was called."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        self.entered.set()
        self.release.wait(SAFETY_TIMEOUT_S)
        self.records.extend(records)

    def flush(self, timeout_s: float) -> bool:
        return self.release.wait(min(timeout_s, SAFETY_TIMEOUT_S))

    def close(self) -> None:
        self.release.wait(SAFETY_TIMEOUT_S)


class FailingTransport:
    """send() raises for the first ``failures`` calls (all calls by default)."""

    def __init__(self, failures: int = 1_000_000) -> None:
        self.failures = failures
        self.calls = 0
        self.records: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("broker unreachable")
        self.records.extend(records)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        raise RuntimeError("close failed too")


@pytest.fixture
def blocking_transport() -> Iterator[BlockingTransport]:
    transport = BlockingTransport()
    yield transport
    transport.release.set()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_RETRY_BACKOFF_MS", "0")


@pytest.fixture
def failing_transport() -> type[FailingTransport]:
    """The class, to build with the number of failures a test wants."""
    return FailingTransport
