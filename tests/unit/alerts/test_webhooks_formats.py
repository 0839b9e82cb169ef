"""Webhook bodies: the alert JSON and the Slack message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from agentwatch.alerts import check_link_template, json_body, render_link, slack_body
from agentwatch.schemas import Alert, AlertState, AlertType, Severity, encode_alert, format_ts

LINK = "https://grafana.example/d/aw?var-tenant={tenant_id}&var-agent={agent_id}&from={ts}"


def all_text(message: dict[str, Any]) -> str:
    """Every string in the message, joined (to look for content wherever it is)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message)
    return "\n".join(out)


def test_json_body_is_the_alert_contract(alert: Alert) -> None:
    body = json_body(alert)
    assert body == encode_alert(alert)
    assert Alert.model_validate_json(body) == alert


def test_slack_body_is_json_with_text_and_blocks(alert: Alert) -> None:
    message = orjson.loads(slack_body(alert))
    assert set(message) == {"text", "blocks"}
    assert alert.reason in message["text"]
    assert "session_cost" in message["text"]
    assert "FIRING" in message["text"]
    assert all(block["type"] in {"section", "context", "actions"} for block in message["blocks"])
    text = all_text(message)
    for expected in (alert.reason, "acme", "agent-a", "session-1", alert.alert_id, "WARNING"):
        assert expected in text
    assert "1.25 USD (threshold 1 USD)" in text
    assert ":warning:" in message["blocks"][0]["text"]["text"]


def test_slack_body_says_resolved_and_severity(make_alert: Callable[..., Alert]) -> None:
    resolved = orjson.loads(slack_body(make_alert(state=AlertState.RESOLVED)))
    assert "RESOLVED" in resolved["text"]
    assert ":white_check_mark:" in resolved["text"]
    critical = orjson.loads(
        slack_body(
            make_alert(
                severity=Severity.CRITICAL,
                type=AlertType.ERROR_RATE,
                value=0.4,
                threshold=0.25,
                window_s=None,
            )
        )
    )
    assert ":red_circle:" in critical["text"]
    assert "40.0% errors (threshold 25.0%)" in all_text(critical)
    assert "whole session" in all_text(critical)


def test_link_only_with_a_template(alert: Alert) -> None:
    without = orjson.loads(slack_body(alert))
    assert "actions" not in {block["type"] for block in without["blocks"]}
    assert "grafana" not in slack_body(alert).decode()
    with_link = orjson.loads(slack_body(alert, LINK))
    (actions,) = [block for block in with_link["blocks"] if block["type"] == "actions"]
    url = actions["elements"][0]["url"]
    ts = quote(format_ts(alert.ts), safe="")
    assert ":" not in ts
    assert url == f"https://grafana.example/d/aw?var-tenant=acme&var-agent=agent-a&from={ts}"
    assert url.startswith("https://grafana.example/d/aw?var-tenant=acme&var-agent=agent-a&from=")


def test_link_values_are_percent_encoded_and_none_is_empty(
    make_alert: Callable[..., Alert],
) -> None:
    alert = make_alert(tenant_id="a&b c/d", agent_id=None, session_id=None)
    url = render_link("https://g/x?t={tenant_id}&a={agent_id}&v={value}&s={severity}", alert)
    assert url == "https://g/x?t=a%26b%20c%2Fd&a=&v=1.25&s=warning"


def test_bad_templates_are_rejected() -> None:
    check_link_template(LINK)
    for bad in ("https://g/{nope}", "https://g/{value!r}", "ftp://g/{tenant_id}", "https://g/}"):
        with pytest.raises(ValueError, match=r"placeholder|http|brace"):
            check_link_template(bad)


def test_mrkdwn_control_characters_are_escaped(make_alert: Callable[..., Alert]) -> None:
    alert = make_alert(
        reason="cost <b>&</b> <!channel> spike",
        tenant_id="t<&>",
        rule="r>1",
    )
    message = orjson.loads(slack_body(alert))
    text = all_text(message)
    assert "cost &lt;b&gt;&amp;&lt;/b&gt; &lt;!channel&gt; spike" in message["text"]
    assert "cost &lt;b&gt;&amp;&lt;/b&gt; &lt;!channel&gt; spike" in text
    assert "t&lt;&amp;&gt;" in text
    assert "r&gt;1" in text
    assert "<!channel>" not in text
    assert "<b>" not in text


def test_long_reason_is_cut_to_slack_limits(make_alert: Callable[..., Alert]) -> None:
    message = orjson.loads(slack_body(make_alert(reason="x" * 10_000)))
    assert len(message["text"]) <= 4000
    assert len(message["blocks"][0]["text"]["text"]) <= 3000
    assert message["blocks"][0]["text"]["text"].endswith("…")
