"""The README's escalation, acknowledgement and PagerDuty sections exist (every setting's
row is checked for all services by tests/unit/test_settings_classes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

README = (Path(__file__).parents[3] / "README.md").read_text()


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
