"""``agentwatch webhooks test``: one signed sample alert to a URL, and what came back;
``agentwatch alerts ack``: acknowledge an alert (stops its escalation)."""

from __future__ import annotations

import codecs
import time
import uuid
from datetime import UTC, datetime
from email.message import Message
from typing import Final, Literal, TextIO

from agentwatch.alerts import (
    WebhookEndpoint,
    delivery_id,
    json_body,
    pagerduty_body,
    post_once,
    sign,
    slack_body,
)
from agentwatch.schemas import (
    Alert,
    AlertScope,
    AlertState,
    AlertType,
    ConfigError,
    Severity,
    format_ts,
)

__all__ = ["TEST_ENDPOINT_NAME", "run_ack", "run_test", "sample_alert"]

#: the endpoint name in the test delivery's id
TEST_ENDPOINT_NAME: Final = "agentwatch-webhooks-test"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
_BODY_PREVIEW_CHARS: Final = 500
#: post_once reads at most this much of a response body
_MAX_BODY_BYTES_READ: Final = 64 * 1024


def sample_alert() -> Alert:
    """A realistic runaway-loop alert with a fresh ``alert_id`` (a receiver that
    deduplicates on it treats every test as new)."""
    session = f"sess-{uuid.uuid4().hex[:12]}"
    return Alert(
        alert_id=str(uuid.uuid4()),
        rule="loop_repeat",
        type=AlertType.RUNAWAY_LOOP,
        state=AlertState.FIRING,
        severity=Severity.CRITICAL,
        scope=AlertScope.SESSION,
        key=session,
        tenant_id="acme",
        agent_id="support-bot",
        session_id=session,
        value=6.0,
        threshold=5.0,
        window_s=120,
        ts=datetime.now(UTC),
        reason=(
            f"session {session} of agent support-bot called tool `search_docs` 6 times "
            "with the same arguments within 120 s (threshold 5) [agentwatch webhooks test]"
        ),
        event_ids=[str(uuid.uuid4()) for _ in range(3)],
    )


def run_test(
    url: str,
    secret: str | None,
    *,
    fmt: Literal["json", "slack", "pagerduty"],
    timeout_s: float,
    out: TextIO,
    err: TextIO,
    allow_private: bool = False,
    routing_key: str | None = None,
) -> int:
    """POST one signed sample alert to ``url`` (a single attempt, no retries) and print
    the outcome. 0 for a 2xx answer, 1 otherwise; ConfigError for bad arguments.
    Without ``allow_private`` a URL reaching a loopback, private, link-local or metadata
    address is refused, as the dispatcher refuses it."""
    if not secret:
        raise ConfigError(
            "a signing secret is needed: --secret S or the AGENTWATCH_WEBHOOK_SECRET "
            "environment variable"
        )
    try:
        endpoint = WebhookEndpoint(
            name=TEST_ENDPOINT_NAME,
            url=url,
            secret=secret,
            timeout_s=timeout_s,
            max_attempts=1,
            allow_private=allow_private,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fmt == "pagerduty" and not routing_key:
        raise ConfigError(
            "--routing-key: needed with --format pagerduty (or the PAGERDUTY_ROUTING_KEY "
            "environment variable): the Events v2 integration key"
        )
    alert = sample_alert()
    if fmt == "pagerduty":
        body = pagerduty_body(alert, routing_key or "")
    else:
        body = slack_body(alert) if fmt == "slack" else json_body(alert)
    did = delivery_id(alert.alert_id, alert.state, endpoint.name)
    timestamp_s = int(time.time())
    # HMAC is deterministic: this is the header post_once sends with the same timestamp
    signature = sign(secret, body, timestamp_s=timestamp_s)

    print(f"POST {url}  ({fmt}, {len(body)} bytes, alert {alert.alert_id})", file=out)
    print(f"delivery:  {did}", file=out)
    print(f"signature: {signature}", file=out)
    started = time.perf_counter()
    outcome = post_once(endpoint, body, delivery_id=did, timestamp_s=timestamp_s)
    elapsed_ms = (time.perf_counter() - started) * 1000
    out.flush()

    if outcome.refused:
        print(f"agentwatch: webhook test not sent: {outcome.error} (or --allow-private)", file=err)
        return EXIT_FAILED
    if outcome.status_code is None:  # no HTTP answer at all
        print(
            f"agentwatch: webhook test failed: no response from {url} after "
            f"{elapsed_ms:.0f} ms: {outcome.error}",
            file=err,
        )
        return EXIT_FAILED
    print(f"status:    {outcome.status_code}  ({elapsed_ms:.1f} ms)", file=out)
    _print_response(outcome.body, outcome.content_type, out)
    if outcome.ok:
        print("result:    delivered", file=out)
        return EXIT_OK
    print(f"result:    not delivered (HTTP {outcome.status_code})", file=out)
    return EXIT_FAILED


def _charset(content_type: str | None) -> str:
    """The ``charset`` of a Content-Type when Python knows it, else UTF-8."""
    if content_type:
        header = Message()
        header["Content-Type"] = content_type
        charset = header.get_content_charset()
        if charset:
            try:
                return codecs.lookup(charset).name
            except LookupError:
                pass
    return "utf-8"


def _one_line(text: str) -> str:
    """``text`` on one line, safe for a terminal: control characters escaped (``\\n``)."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _print_response(body: bytes | None, content_type: str | None, out: TextIO) -> None:
    """``response:`` the body's first characters on one line; ``content:`` its type and size."""
    if body is None:
        return
    text = body.decode(_charset(content_type), "replace")
    preview = _one_line(text[:_BODY_PREVIEW_CHARS].strip())
    if len(text) > _BODY_PREVIEW_CHARS:
        preview += f" ... ({len(text) - _BODY_PREVIEW_CHARS} more chars)"
    print(f"response:  {preview or '(empty body)'}", file=out)
    size = f"{len(body)} bytes"
    if len(body) >= _MAX_BODY_BYTES_READ:
        size = f"at least {size} (read no further)"
    print(f"content:   {content_type or '(no Content-Type)'}, {size}", file=out)


def run_ack(
    alert_id: str, by: str, *, bootstrap_servers: str, topic: str, out: TextIO
) -> int:
    """``agentwatch alerts ack``: write the acknowledgement to the acks topic, where every
    dispatcher (and the sink) reads it. ConfigError for a bad id or name, TransportError
    when Kafka cannot take it."""
    from agentwatch.alerts import Ack, write_ack  # noqa: PLC0415

    alert_id = alert_id.strip()
    # Every alert id is a UUID (the core's uuid5 of rule, scope, key and firing time). An
    # ack of anything else reaches no alert and would be stored as if it had: a truncated
    # or mistyped id is refused here. A well-formed id of no alert cannot be told apart
    # without reading the alerts (the CLI does not read them): it is written, and ignored.
    try:
        canonical = str(uuid.UUID(alert_id))
    except ValueError:
        raise ConfigError(
            f"ALERT_ID: {alert_id!r} is not an alert id (alert ids are UUIDs, e.g. "
            "6f1c2a4e-0b7d-5c1e-9a51-3d2f8e0c4b71: copy it from the webhook body or the "
            "alerts table)") from None
    if canonical != alert_id.lower():
        raise ConfigError(f"ALERT_ID: {alert_id!r} is not an alert id in its canonical "
                          f"form (did you mean {canonical}?)")
    alert_id = canonical
    try:
        ack = Ack.now(alert_id, by, via="cli")
    except ValueError as exc:
        key, _, why = str(exc).partition(": ")
        option = "--by" if key == "by" else "ALERT_ID"
        raise ConfigError(f"{option}: {why}") from None
    write_ack(bootstrap_servers, topic, ack)
    print(f"alert {alert_id} acknowledged by {ack.by} at {format_ts(ack.at)} ({topic})", file=out)
    return EXIT_OK
