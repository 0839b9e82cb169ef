"""``agentwatch alerts ack`` refuses what cannot be an alert id before it writes anything
(alert ids are UUIDs): one error line, exit 2, no traceback."""

from __future__ import annotations

import pytest
from cli_helpers import error_line, run

ID = "6f1c2a4e-0b7d-5c1e-9a51-3d2f8e0c4b71"


@pytest.mark.parametrize(
    ("alert_id", "says"),
    [
        ("abc", "'abc' is not an alert id (alert ids are UUIDs"),
        (ID[:-1], f"'{ID[:-1]}' is not an alert id (alert ids are UUIDs"),
        (ID + "0", f"'{ID}0' is not an alert id (alert ids are UUIDs"),
        (ID.replace("-", ""), f"is not an alert id in its canonical form (did you mean {ID}?)"),
        ("{" + ID + "}", f"is not an alert id in its canonical form (did you mean {ID}?)"),
    ],
)
def test_a_malformed_alert_id_is_refused_before_kafka(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, alert_id: str, says: str
) -> None:
    # a closed port: had the command tried to write, it would fail on Kafka, not on the id
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, out, err = run(capsys, "alerts", "ack", alert_id, "--by", "maria")
    assert code == 2
    assert out == ""
    line = error_line(err)
    assert "ALERT_ID: " in line
    assert says in line
