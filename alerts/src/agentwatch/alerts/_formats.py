"""Webhook bodies: the alert JSON itself, a Slack incoming-webhook message, or a
PagerDuty Events v2 event.

``json`` is exactly :func:`agentwatch.schemas.encode_alert` (the contract of DESIGN.md);
when the dispatcher serves acknowledgement links (off by default) a firing's body also
carries ``ack_url``, the one key outside the alert contract.
``pagerduty`` is an Events API v2 event (:func:`pagerduty_body`): ``trigger`` on firing,
``resolve`` on resolution, ``dedup_key`` = the alert id; an acknowledgement in agentwatch
sends ``acknowledge`` (:func:`pagerduty_acknowledge_body`) with the same ``dedup_key``.
``slack`` is a message for a Slack (or Slack-compatible: Mattermost, Rocket.Chat)
incoming webhook: a plain ``text`` fallback for notifications plus ``blocks`` with the
severity, rule, state, reason, where it happened, value against threshold and, when the
endpoint has a ``link_template``, a button to a dashboard.

A link template is a URL with ``{field}`` placeholders naming alert fields
(:data:`LINK_FIELDS`), e.g.
``https://grafana.example/d/agentwatch?var-tenant={tenant_id}&var-agent={agent_id}``.
Each value is percent-encoded; a missing one (``agent_id`` of a tenant alert) becomes
the empty string. Conversions (``!r``), format specs (``:.2f``), attribute or index
access are not allowed: :func:`check_link_template` rejects them up front.
"""

from __future__ import annotations

import string
from datetime import datetime
from enum import Enum
from typing import Any, Final
from urllib.parse import quote

import orjson

from agentwatch.schemas import Alert, AlertState, AlertType, Severity, encode_alert, format_ts

__all__ = [
    "ACK_URL_KEY",
    "LINK_FIELDS",
    "PAGERDUTY_SEVERITY",
    "PAGERDUTY_SUMMARY_MAX_CHARS",
    "check_link_template",
    "json_body",
    "pagerduty_acknowledge_body",
    "pagerduty_body",
    "render_link",
    "slack_body",
]

#: the key of a json body's acknowledgement link (only in firings, only when enabled)
ACK_URL_KEY: Final = "ack_url"

#: alert fields a link template may name: every scalar field of the alert contract
#: (not the free-text reason, not the event id list)
LINK_FIELDS: Final = frozenset(Alert.model_fields) - {"reason", "event_ids"}

_SEVERITY_EMOJI: Final = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
_RESOLVED_EMOJI: Final = ":white_check_mark:"
_MAX_SECTION_CHARS: Final = 3000  # Slack's limit for a section's text
_MAX_FIELD_CHARS: Final = 2000  # ... and for one of its fields
_MAX_TEXT_CHARS: Final = 4000  # the top-level fallback text (Slack truncates at 40k)
_MAX_URL_CHARS: Final = 3000  # a button's url


def json_body(alert: Alert, ack_url: str | None = None) -> bytes:
    """The design's webhook body: the alert contract as JSON (plus ``ack_url`` when
    given)."""
    body = encode_alert(alert)
    if ack_url is None:
        return body
    return body[:-1] + b',"' + ACK_URL_KEY.encode() + b'":' + orjson.dumps(ack_url) + b"}"


# -- link templates ----------------------------------------------------------------------


def check_link_template(template: str) -> None:
    """Raise ValueError unless ``template`` is an http(s) URL whose placeholders are all
    plain alert field names (see the module docstring)."""
    if not template.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if not template.isascii() or any(c.isspace() or not c.isprintable() for c in template):
        raise ValueError("must be ASCII without spaces")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone { or }
        raise ValueError(
            f"bad placeholder syntax: {exc} (write {{{{ or }}}} for a brace)"
        ) from None
    for _literal, field, format_spec, conversion in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError("placeholders must name an alert field, e.g. {tenant_id}")
        if field not in LINK_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{field}}}; use one of {', '.join(sorted(LINK_FIELDS))}"
            )
        if conversion is not None or format_spec:
            raise ValueError(
                f"placeholder {{{field}}}: conversions and format specs are not allowed"
            )


def _link_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, datetime):
        value = format_ts(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return quote(str(value), safe="")


def render_link(template: str, alert: Alert) -> str:
    """``template`` with the alert's (percent-encoded) fields filled in."""
    check_link_template(template)
    return template.format_map({name: _link_value(getattr(alert, name)) for name in LINK_FIELDS})


# -- Slack ----------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack mrkdwn control characters: ``&``, ``<``, ``>`` (in this order)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float) -> str:
    return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6g}"


def _measure(alert: Alert) -> str:
    """Value against threshold, in the unit of the alert type."""
    if alert.type is AlertType.COST:
        return f"{alert.value:,.4g} USD (threshold {alert.threshold:,.4g} USD)"
    if alert.type is AlertType.ERROR_RATE:
        return f"{alert.value:.1%} errors (threshold {alert.threshold:.1%})"
    if alert.type is AlertType.BUDGET:
        return f"{alert.value:,.2f} USD spent (threshold {alert.threshold:,.2f} USD)"
    if alert.type is AlertType.LATENCY:
        return f"{alert.value:,.0f} ms (threshold {alert.threshold:,.0f} ms)"
    return f"{_number(alert.value)} (threshold {_number(alert.threshold)})"


def _headline(alert: Alert) -> tuple[str, str]:
    """(emoji, words) of the first line, e.g. (":red_circle:", "CRITICAL · loop · FIRING")."""
    firing = alert.state is AlertState.FIRING
    emoji = _SEVERITY_EMOJI[alert.severity] if firing else _RESOLVED_EMOJI
    words = f"{alert.severity.value.upper()} · {alert.rule} · {alert.state.value.upper()}"
    return emoji, words


def slack_body(alert: Alert, link_template: str | None = None, ack_url: str | None = None) -> bytes:
    """A Slack incoming-webhook message for ``alert`` (JSON bytes).

    ``text`` is the notification fallback; ``blocks`` carry the details. User-controlled
    strings are escaped for mrkdwn (``&``, ``<``, ``>``); the link, when a template is
    given, is a button (its URL is not mrkdwn, so it is not escaped).
    """
    emoji, words = _headline(alert)
    where = [f"tenant {alert.tenant_id}"]
    if alert.agent_id is not None:
        where.append(f"agent {alert.agent_id}")
    if alert.session_id is not None:
        where.append(f"session {alert.session_id}")
    text = _cut(f"{emoji} {words}: {alert.reason} ({', '.join(where)})", _MAX_TEXT_CHARS)

    fields = [
        ("Tenant", alert.tenant_id),
        ("Agent", alert.agent_id or "—"),
        ("Session", alert.session_id or "—"),
        ("Value", _measure(alert)),
        ("Type", alert.type.value),
        ("Window", f"{alert.window_s} s" if alert.window_s is not None else "whole session"),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(
                    f"{emoji} *{_escape(words)}*\n{_escape(alert.reason)}", _MAX_SECTION_CHARS
                ),
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(f"*{name}*\n{_escape(value)}", _MAX_FIELD_CHARS)}
                for name, value in fields
            ],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _escape(f"alert {alert.alert_id} · {format_ts(alert.ts)}"),
                }
            ],
        },
    ]
    buttons: list[dict[str, Any]] = []
    if link_template is not None:
        url = render_link(link_template, alert)
        if len(url) <= _MAX_URL_CHARS:
            buttons.append(
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open dashboard"},
                    "url": url,
                }
            )
    if ack_url is not None and len(ack_url) <= _MAX_URL_CHARS:
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "url": ack_url,
                "style": "primary",
            }
        )
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return orjson.dumps({"text": _escape(text), "blocks": blocks})


# -- PagerDuty Events v2 ------------------------------------------------------------------

#: alert severity -> PagerDuty severity (Events v2 takes critical, error, warning, info)
PAGERDUTY_SEVERITY: Final = {
    Severity.CRITICAL: "critical",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}
#: Events v2 limits: payload.summary 1024 characters, dedup_key 255
PAGERDUTY_SUMMARY_MAX_CHARS: Final = 1024
_PAGERDUTY_DEDUP_KEY_MAX_CHARS: Final = 255
_PAGERDUTY_SOURCE_MAX_CHARS: Final = 255


def _pagerduty_severity(severity: Severity) -> str:
    # a severity added later without a mapping pages as "error", never fails the delivery
    return PAGERDUTY_SEVERITY.get(severity, "error")


def pagerduty_body(alert: Alert, routing_key: str, ack_url: str | None = None) -> bytes:
    """A PagerDuty Events API v2 event for ``alert`` (JSON bytes), to POST to
    ``https://events.pagerduty.com/v2/enqueue``.

    A firing is a ``trigger`` with a ``payload`` (summary cut to 1024 characters,
    source ``agentwatch/<tenant>[/<agent>]``, mapped severity, the event-time timestamp,
    the alert's fields as ``custom_details``) and, with ack links on, a ``links`` entry;
    a resolution is a ``resolve`` (PagerDuty needs only the routing and dedup keys).
    ``dedup_key`` is the alert id either way, so the resolution closes the incident the
    firing opened, and a retried or escalated trigger joins it.
    """
    if alert.state is AlertState.RESOLVED:
        return _pagerduty_action("resolve", alert.alert_id, routing_key)
    if not routing_key:
        raise ValueError("routing_key: must not be empty")
    dedup_key = alert.alert_id[:_PAGERDUTY_DEDUP_KEY_MAX_CHARS]
    source = f"agentwatch/{alert.tenant_id}"
    if alert.agent_id is not None:
        source += f"/{alert.agent_id}"
    summary = f"[{alert.severity.value}] {alert.rule}: {alert.reason}"
    details = orjson.loads(encode_alert(alert))
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": _cut(summary, PAGERDUTY_SUMMARY_MAX_CHARS),
            "source": _cut(source, _PAGERDUTY_SOURCE_MAX_CHARS),
            "severity": _pagerduty_severity(alert.severity),
            "timestamp": format_ts(alert.ts),
            "component": alert.agent_id or alert.key,
            "group": alert.tenant_id,
            "class": alert.type.value,
            "custom_details": details,
        },
        "client": "agentwatch",
    }
    if ack_url is not None:
        event["links"] = [{"href": ack_url, "text": "Acknowledge in agentwatch"}]
    return orjson.dumps(event)


def pagerduty_acknowledge_body(alert_id: str, routing_key: str) -> bytes:
    """The Events API v2 ``acknowledge`` of the incident ``alert_id``'s trigger opened
    (same ``dedup_key``): sent when somebody acknowledges the alert in agentwatch, so
    PagerDuty stops paging too."""
    return _pagerduty_action("acknowledge", alert_id, routing_key)


def _pagerduty_action(action: str, alert_id: str, routing_key: str) -> bytes:
    """``resolve`` and ``acknowledge`` need only the routing and dedup keys."""
    if not routing_key:
        raise ValueError("routing_key: must not be empty")
    dedup_key = alert_id[:_PAGERDUTY_DEDUP_KEY_MAX_CHARS]
    return orjson.dumps(
        {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}
    )
