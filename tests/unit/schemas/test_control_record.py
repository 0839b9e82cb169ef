"""The control record contract: keys, values, validation, the record of an alert."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from agentwatch.schemas import (
    AgentHalted,
    AgentwatchError,
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    ControlAction,
    ControlRecord,
    Severity,
    control_key,
    decode_control,
    encode_control,
)

TS = datetime(2026, 11, 20, 9, 0, 1, 250000, tzinfo=UTC)


def _alert(state: AlertState, scope: AlertScope = AlertScope.SESSION) -> Alert:
    return Alert(alert_id="a-1", rule="loop_repeat", type=AlertType.RUNAWAY_LOOP, state=state,
                 severity=Severity.CRITICAL, scope=scope, key="s-1", tenant_id="acme",
                 agent_id="bot", session_id="s-1" if scope is AlertScope.SESSION else None,
                 value=5, threshold=5, window_s=120, ts=TS,
                 reason="reroute_shipment called 5 times with the same arguments")


def test_keys_name_the_scope_first_so_an_agent_and_a_session_never_share_one() -> None:
    assert control_key(AlertScope.TENANT, "acme") == "tenant:acme"
    assert control_key(AlertScope.AGENT, "acme", "x") == "agent:acme/x"
    assert control_key(AlertScope.SESSION, "acme", None, "x") == "session:acme/x"


def test_a_firing_alert_gives_a_halt_of_its_scope_and_its_resolution_a_resume() -> None:
    halt = ControlRecord.from_alert(_alert(AlertState.FIRING))
    assert (halt.action, halt.key, halt.by, halt.alert_id, halt.ts) == (
        ControlAction.HALT, "session:acme/s-1", "loop_repeat", "a-1", TS)
    resume = ControlRecord.from_alert(_alert(AlertState.RESOLVED))
    assert (resume.action, resume.key) == (ControlAction.RESUME, "session:acme/s-1")


def test_an_agent_alert_halts_the_agent_and_names_no_session() -> None:
    halt = ControlRecord.from_alert(_alert(AlertState.FIRING, AlertScope.AGENT))
    assert (halt.key, halt.session_id) == ("agent:acme/bot", None)


def test_encode_then_decode_gives_the_same_record() -> None:
    record = ControlRecord.by_operator(ControlAction.HALT, tenant_id="acme", agent_id="bot",
                                       reason="burning money", by="alice", ts=TS)
    key, value = encode_control(record)
    assert key == b"agent:acme/bot"
    assert orjson.loads(value)["ts"] == "2026-11-20T09:00:01.250000Z"
    assert decode_control(value) == record


def test_an_operator_session_halt_is_session_scoped() -> None:
    record = ControlRecord.by_operator(ControlAction.HALT, tenant_id="acme", session_id="s",
                                       reason="r", by="alice")
    assert (record.scope, record.key) == (AlertScope.SESSION, "session:acme/s")


@pytest.mark.parametrize(("change", "named"), [
    ({"action": "pause"}, "action"),
    ({"scope": "agent", "agent_id": None}, "scope agent needs agent_id"),
    ({"by": ""}, "by"),
    ({"extra": 1}, "extra"),
])
def test_a_bad_record_is_refused_naming_the_field(change: dict[str, object], named: str
                                                  ) -> None:
    good = orjson.loads(encode_control(ControlRecord.from_alert(
        _alert(AlertState.FIRING)))[1])
    with pytest.raises(ValueError, match=named):
        decode_control(orjson.dumps({**good, **change}))


def test_not_json_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_control(b"{nope")


def test_agent_halted_is_an_agentwatch_error_that_carries_the_halt() -> None:
    halt = ControlRecord.from_alert(_alert(AlertState.FIRING))
    err = AgentHalted(halt)
    assert isinstance(err, AgentwatchError)
    assert err.halt is halt
    assert "session acme/s-1 halted by loop_repeat" in str(err)
