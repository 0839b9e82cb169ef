"""The Slack message states budget and latency alerts in their units."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from test_webhooks_formats import all_text

from agentwatch.alerts import slack_body
from agentwatch.schemas import Alert, AlertType


def test_budget_and_latency_values_have_their_units(make_alert: Callable[..., Alert]) -> None:
    budget = make_alert(type=AlertType.BUDGET, value=1234.5, threshold=1000.0, window_s=None)
    assert "1,234.50 USD spent (threshold 1,000.00 USD)" in all_text(
        orjson.loads(slack_body(budget)))
    latency = make_alert(type=AlertType.LATENCY, value=12345.6, threshold=10000.0)
    assert "12,346 ms (threshold 10,000 ms)" in all_text(orjson.loads(slack_body(latency)))
