"""Alert records read back from Kafka (the sink's alerts and alert-failure topics, the
webhook dispatcher) on hostile input: pydantic's ValidationError is the only error (the
callers dead-letter or skip on it), and what is accepted encodes and converts to rows."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agentwatch.schemas import Alert, DeliveryFailure, encode_alert
from agentwatch.sinks import alerts_to_arrow

sys.path.insert(0, str(Path(__file__).parents[1] / "schemas"))
from hostile_inputs import HOSTILE, numbers, texts, ts_values

ALERT: dict[str, Any] = {
    "alert_id": "a-1", "rule": "session_cost", "type": "cost", "state": "firing",
    "severity": "warning", "scope": "session", "key": "s", "tenant_id": "t",
    "agent_id": "a", "session_id": "s", "value": 1.5, "threshold": 1.0, "window_s": 60,
    "ts": "2026-11-20T09:00:00Z", "reason": "cost over 1.00 USD", "event_ids": ["e"],
}
FIELDS: dict[str, Any] = {
    "ts": ts_values, "value": numbers, "threshold": numbers, "window_s": numbers,
    "type": st.sampled_from(["cost", "error_rate", "runaway_loop", "x"]),
    "state": st.sampled_from(["firing", "resolved", "x"]), "key": texts, "reason": texts,
    "event_ids": st.lists(st.text(max_size=3), max_size=60),
}


@st.composite
def alert_records(draw: st.DrawFn) -> bytes:
    alert = dict(ALERT)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        alert[name] = draw(FIELDS[name])
    try:
        return orjson.dumps(alert)
    except orjson.JSONEncodeError:
        return b"{}"


def _read(value: bytes) -> Alert | None:
    try:
        return Alert.model_validate_json(value)
    except ValidationError:
        return None


@HOSTILE
@given(st.one_of(alert_records(), st.binary(max_size=100)))
def test_hostile_alert_records_validate_or_raise_a_validation_error(value: bytes) -> None:
    alert = _read(value)
    if alert is not None:
        assert Alert.model_validate_json(encode_alert(alert)) == alert
        alerts_to_arrow([alert])
    failure = orjson.dumps({"alert": orjson.loads(value) if alert else None, "endpoint": "e",
                            "delivery_id": "d", "attempts": 1, "status_code": None,
                            "error": "x"})
    with contextlib.suppress(ValidationError):  # the only error allowed
        DeliveryFailure.decode(failure)


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_that_overflows_utc_is_a_validation_error_not_an_overflow(ts: str) -> None:
    with pytest.raises(ValidationError, match="timestamp out of range"):
        Alert.model_validate_json(orjson.dumps({**ALERT, "ts": ts}))


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "0999-12-31T23:59:59.5Z",
                                "9999-12-31T23:59:59.999999Z"])
def test_an_alert_at_any_year_encodes_to_a_time_that_reads_back(ts: str) -> None:
    alert = Alert.model_validate_json(orjson.dumps({**ALERT, "ts": ts}))
    assert Alert.model_validate_json(encode_alert(alert)) == alert
