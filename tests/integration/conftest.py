"""Fixtures for the integration tests: one real Kafka broker per session, fresh topic names.

``KAFKA_BOOTSTRAP_SERVERS`` points the suite at an existing cluster; otherwise a broker is
started from cached jars (see ``kafka_broker.py``). Without one the tests skip with the reason,
except under ``CI=true``, where they fail: CI must prove the Kafka path.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from kafka_broker import (
    SASL_MECHANISM,
    SASL_PASSWORD,
    SASL_USER,
    KafkaBroker,
    KafkaUnavailable,
    start_broker,
)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kafka)


def _start_or_reason() -> KafkaBroker | KafkaUnavailable:
    # Returned, not raised on: skip/fail from inside an except block chains a second traceback.
    try:
        return start_broker()
    except KafkaUnavailable as exc:
        return exc


def _unavailable(exc: KafkaUnavailable) -> NoReturn:
    reason = f"no Kafka broker: {exc.reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}\n{exc.detail}" if exc.detail else reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def session_broker() -> Iterator[KafkaBroker | None]:
    """The suite's broker; None when ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster to use."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        yield None
        return
    broker = _start_or_reason()
    if isinstance(broker, KafkaUnavailable):
        _unavailable(broker)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: KafkaBroker | None) -> str:
    if session_broker is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"].strip()
    return session_broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_secure_env(session_broker: KafkaBroker | None) -> dict[str, str]:
    """The settings (environment variables) of a client of the broker's SASL_SSL listener
    (SCRAM-SHA-512, its self-signed certificate as the CA)."""
    if session_broker is None:
        pytest.skip("needs the SASL_SSL listener of the broker the suite starts "
                    "(KAFKA_BOOTSTRAP_SERVERS is set)")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": session_broker.sasl_bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
        "KAFKA_SASL_USERNAME": SASL_USER,
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "KAFKA_SSL_CAFILE": str(session_broker.ca_file),
    }


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test (or earlier run) used: deletion in Kafka is asynchronous."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:200]
    return f"aw-{stem}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def own_broker() -> Iterator[KafkaBroker]:
    """A broker of the test's own, for tests that stop and start it (or read its data dir)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        pytest.skip("stops and starts a broker it runs itself (KAFKA_BOOTSTRAP_SERVERS is set)")
    broker = _start_or_reason()
    if isinstance(broker, KafkaUnavailable):
        _unavailable(broker)
    yield broker
    broker.stop()
