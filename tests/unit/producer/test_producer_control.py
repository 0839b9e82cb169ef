"""The agent obeys: halts followed from an in-process log, AgentHalted, halted(), on_halt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agentwatch.producer import AgentHalted, Agentwatch, Halt, InProcessLog, InProcessTransport
from agentwatch.producer.control import HaltTable
from agentwatch.producer.testing import collector
from agentwatch.schemas import (
    CONTROL_TOPIC,
    ConfigError,
    ControlAction,
    ControlRecord,
    encode_control,
)

WAIT_S = 10.0


def _op(action: ControlAction, *, tenant: str = "acme", agent: str | None = None,
        session: str | None = None) -> tuple[bytes, bytes]:
    return encode_control(ControlRecord.by_operator(
        action, tenant_id=tenant, agent_id=agent, session_id=session, reason="test", by="op"))


def _until(check: object, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def log() -> InProcessLog:
    return InProcessLog()


@pytest.fixture
def aw(log: InProcessLog) -> Iterator[Agentwatch]:
    client = Agentwatch(transport=InProcessTransport(log), tenant_id="acme", agent_id="bot",
                        control=True, linger_ms=5)
    yield client
    client.close()


def test_halt_table_looks_up_session_then_agent_then_tenant() -> None:
    table = HaltTable("acme")
    assert table.lookup("bot", "s1") is None
    table.apply(*_op(ControlAction.HALT, agent="bot"))
    halt = table.lookup("bot", "s1")
    assert halt is not None
    assert halt.key == "agent:acme/bot"
    assert table.lookup("other", "s1") is None
    table.apply(*_op(ControlAction.HALT, session="s1"))
    halt = table.lookup("bot", "s1")
    assert halt is not None
    assert halt.key == "session:acme/s1"


def test_halt_table_ignores_other_tenants_and_clears_on_resume_and_tombstone() -> None:
    table = HaltTable("acme")
    table.apply(*_op(ControlAction.HALT, tenant="other"))
    assert table.halts() == []
    table.apply(*_op(ControlAction.HALT))
    assert table.lookup("bot", "s") is not None
    table.apply(*_op(ControlAction.RESUME))
    assert table.lookup("bot", "s") is None
    key, value = _op(ControlAction.HALT, session="s")
    table.apply(key, value)
    table.apply(key, None)
    assert table.halts() == []


def test_halt_table_refuses_a_bad_record_with_value_error() -> None:
    with pytest.raises(ValueError, match="control record"):
        HaltTable("acme").apply(b"tenant:acme", b"[]")


def test_a_halted_session_raises_agent_halted_from_llm_and_tool_calls(
        aw: Agentwatch, log: InProcessLog) -> None:
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT, session="loop")])
    with aw.session("loop"):
        assert _until(lambda: aw.halted() is not None)
        with pytest.raises(AgentHalted) as info, aw.llm_call(model="gpt-4o"):
            pass
        assert info.value.halt.session_id == "loop"
        with pytest.raises(AgentHalted), aw.tool_call("search", args={"q": 1}):
            pass


def test_other_sessions_of_the_agent_keep_running(aw: Agentwatch, log: InProcessLog) -> None:
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT, session="loop")])
    assert _until(lambda: aw.halted("loop") is not None)
    with aw.session("healthy"), aw.llm_call(model="gpt-4o"):
        pass
    assert aw.halted("healthy") is None


def test_an_agent_halt_stops_every_session_and_resume_lets_them_run(
        aw: Agentwatch, log: InProcessLog) -> None:
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT, agent="bot")])
    assert _until(lambda: aw.halted("a") is not None and aw.halted("b") is not None)
    log.append(CONTROL_TOPIC, [_op(ControlAction.RESUME, agent="bot")])
    assert _until(lambda: aw.halted("a") is None)
    with aw.session("a"), aw.tool_call("search"):
        pass


def test_a_decorated_tool_raises_before_its_body_runs(aw: Agentwatch, log: InProcessLog
                                                      ) -> None:
    ran: list[int] = []

    @aw.tool_call()
    def search(q: int) -> None:
        ran.append(q)

    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT)])
    assert _until(lambda: aw.halted() is not None)
    with pytest.raises(AgentHalted):
        search(1)
    assert ran == []


def test_a_client_started_after_the_halt_sees_it(log: InProcessLog) -> None:
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT, agent="bot")])
    with Agentwatch(transport=InProcessTransport(log), tenant_id="acme", agent_id="bot",
                    control=True) as client:
        assert _until(lambda: client.halted() is not None)


def test_on_halt_is_called_with_halts_of_the_clients_agent_only(log: InProcessLog) -> None:
    seen: list[Halt] = []
    got = threading.Event()

    def hook(halt: Halt) -> None:
        seen.append(halt)
        got.set()

    with Agentwatch(transport=InProcessTransport(log), tenant_id="acme", agent_id="bot",
                    control=True, on_halt=hook):
        log.append(CONTROL_TOPIC, [_op(ControlAction.HALT, agent="other"),
                                   _op(ControlAction.HALT, agent="bot")])
        assert got.wait(WAIT_S)
    assert [h.agent_id for h in seen] == ["bot"]


def test_without_control_nothing_is_followed_and_nothing_raises(log: InProcessLog) -> None:
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT)])
    with Agentwatch(transport=InProcessTransport(log), tenant_id="acme") as client:
        with client.llm_call():
            pass
        assert client.halted() is None


def test_control_from_the_environment(log: InProcessLog, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.setenv("AGENTWATCH_CONTROL", "true")
    log.append(CONTROL_TOPIC, [_op(ControlAction.HALT)])
    with Agentwatch(transport=InProcessTransport(log), tenant_id="acme") as client:
        assert client.settings.control
        assert _until(lambda: client.halted() is not None)


def test_a_bad_control_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_CONTROL", "perhaps")
    with pytest.raises(ConfigError, match="AGENTWATCH_CONTROL"):
        collector()


def test_control_with_a_transport_that_cannot_follow_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="control: needs bootstrap_servers"):
        collector(control=True)
