"""The README documents every setting of `agentwatch webhooks` and `agentwatch sink`, and
the escalation, acknowledgement and PagerDuty sections exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts import WEBHOOKS_ENV_VARS
from agentwatch.sinks._settings import SINK_ENV_VARS

README = (Path(__file__).parents[3] / "README.md").read_text()


@pytest.mark.parametrize(
    "var", sorted(set(WEBHOOKS_ENV_VARS.values()) | set(SINK_ENV_VARS.values()))
)
def test_every_environment_variable_is_in_a_settings_table(var: str) -> None:
    assert any(line.startswith("|") and f"`{var}`" in line for line in README.splitlines()), var


@pytest.mark.parametrize(
    "text",
    [
        "### Escalation and acknowledgement",
        "### PagerDuty",
        "agentwatch alerts ack",
        "escalate_after_s",
        "routing_key_env",
        "alert_status",
    ],
)
def test_readme_documents_escalation_and_pagerduty(text: str) -> None:
    assert text in README
