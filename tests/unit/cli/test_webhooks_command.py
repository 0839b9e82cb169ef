"""`agentwatch webhooks test` against a real receiver on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import subprocess

import orjson
import pytest
from cli_helpers import PROXY_VARS, run_installed

from agentwatch.alerts import WebhookReceiver, delivery_id
from agentwatch.cli._webhooks import run_test
from agentwatch.schemas import AlertState, AlertType, Severity

SECRET = "test-secret"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    drop = (*PROXY_VARS, "AGENTWATCH_WEBHOOK_SECRET", "PAGERDUTY_ROUTING_KEY")
    return run_installed(*args, drop=drop, timeout_s=60, **env)


def field(stdout: str, name: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith(f"{name}:")]
    return line.removeprefix(f"{name}:").strip()


def test_delivers_one_signed_alert() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        proc = run_private(receiver.url + "hooks/aw", "--secret", SECRET)
        assert receiver.wait_for(1, 5)
        received = receiver.received
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(received) == 1
    (delivery,) = received
    assert delivery.path == "/hooks/aw"
    assert delivery.verified is True, delivery.verify_error
    alert = delivery.alert()
    assert alert.type is AlertType.RUNAWAY_LOOP
    assert alert.state is AlertState.FIRING
    assert alert.severity is Severity.CRITICAL
    # what the command printed is what was sent
    assert field(proc.stdout, "delivery") == delivery.delivery_id
    assert delivery.delivery_id == delivery_id(
        alert.alert_id, alert.state, "agentwatch-webhooks-test"
    )
    assert field(proc.stdout, "signature") == delivery.signature
    assert field(proc.stdout, "status").startswith("200 ")
    assert field(proc.stdout, "status").endswith(" ms)")
    assert alert.alert_id in proc.stdout


def run_private(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``agentwatch webhooks test --allow-private ARGS``: the receivers are on 127.0.0.1."""
    return run("webhooks", "test", "--allow-private", *args, **env)


def run_in_process(url: str, **receiver_options: object) -> tuple[int, str, str]:
    """``run_test`` in this process against a receiver: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with WebhookReceiver(secret=SECRET, **receiver_options) as receiver:  # type: ignore[arg-type]
        code = run_test(receiver.url + url, SECRET, fmt="json", timeout_s=5.0, out=out, err=err,
                        allow_private=True)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def test_prints_the_body_and_content_type_of_a_2xx_answer() -> None:
    body = '{"received": true, "ticket": "OPS-1234"}'
    with WebhookReceiver(secret=SECRET, response_body=body) as receiver:
        proc = run_private(receiver.url, "--secret", SECRET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert field(proc.stdout, "response") == body
    assert field(proc.stdout, "content") == f"application/json, {len(body)} bytes"
    assert field(proc.stdout, "result") == "delivered"
    # in order: status, then what came back, then the verdict
    labels = [line.split(":", 1)[0] for line in proc.stdout.splitlines()[-4:]]
    assert labels == ["status", "response", "content", "result"]


@pytest.mark.usefixtures("_no_proxy")
def test_a_multi_line_text_body_is_printed_on_one_line() -> None:
    code, out, _ = run_in_process(
        "",
        response_body="accepted\nqueued as 42\t\x1b[31m",
        response_headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert code == 0
    assert field(out, "response") == "accepted\\nqueued as 42\\t\\x1b[31m"
    assert "\x1b" not in out  # no terminal escape from the endpoint reaches the terminal
    assert field(out, "content").startswith("text/plain; charset=utf-8, ")


@pytest.mark.usefixtures("_no_proxy")
def test_the_body_is_decoded_with_the_declared_charset() -> None:
    code, out, _ = run_in_process(
        "",
        response_body="reçu".encode("latin-1"),
        response_headers={"Content-Type": "text/plain; charset=iso-8859-1"},
    )
    assert code == 0
    assert field(out, "response") == "reçu"


@pytest.mark.usefixtures("_no_proxy")
def test_a_long_body_is_cut_at_500_chars() -> None:
    code, out, _ = run_in_process("", response_body="a" * 1200)
    assert code == 0
    assert field(out, "response") == "a" * 500 + " ... (700 more chars)"
    assert field(out, "content") == "application/json, 1200 bytes"


@pytest.mark.usefixtures("_no_proxy")
def test_a_huge_body_says_only_the_start_was_read() -> None:
    code, out, _ = run_in_process("", response_body=b"b" * 100_000)
    assert code == 0
    assert field(out, "content") == "application/json, at least 65536 bytes (read no further)"


@pytest.mark.usefixtures("_no_proxy")
def test_an_empty_body_says_so() -> None:
    code, out, _ = run_in_process("", statuses=[204], response_body=b"")
    assert code == 0
    assert field(out, "status").startswith("204 ")
    assert field(out, "response") == "(empty body)"
    assert field(out, "content") == "application/json, 0 bytes"


@pytest.mark.usefixtures("_no_proxy")
def test_an_error_body_is_printed_whole_up_to_500_chars() -> None:
    detail = "invalid signature: " + "x" * 300  # longer than the sender's error snippet
    code, out, _ = run_in_process("", statuses=[401], response_body=detail)
    assert code == 1
    assert field(out, "response") == detail
    assert field(out, "result") == "not delivered (HTTP 401)"


def test_fresh_alert_id_each_time_and_secret_from_env() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        first = run_private(receiver.url, AGENTWATCH_WEBHOOK_SECRET=SECRET)
        second = run_private(receiver.url, AGENTWATCH_WEBHOOK_SECRET=SECRET)
        assert receiver.wait_for(2, 5)
        received = receiver.received
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert all(d.verified for d in received)
    assert received[0].alert().alert_id != received[1].alert().alert_id
    assert received[0].delivery_id != received[1].delivery_id


def test_slack_format_sends_the_slack_message() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        proc = run_private(receiver.url, "--secret", SECRET, "--format", "slack")
        assert receiver.wait_for(1, 5)
        (delivery,) = receiver.received
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert delivery.verified is True
    message = orjson.loads(delivery.body)
    assert set(message) == {"text", "blocks"}
    assert "loop_repeat" in message["text"]
    assert "FIRING" in message["text"]
    assert "search_docs" in message["text"]
    assert "(slack," in proc.stdout


def test_pagerduty_format_sends_an_events_v2_trigger() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        proc = run_private(
            receiver.url, "--secret", SECRET, "--format", "pagerduty", "--routing-key", "rk-1"
        )
        assert receiver.wait_for(1, 5)
        (delivery,) = receiver.received
    assert proc.returncode == 0, proc.stdout + proc.stderr
    event = orjson.loads(delivery.body)
    assert (event["event_action"], event["routing_key"]) == ("trigger", "rk-1")
    assert event["payload"]["severity"] == "critical"
    assert "rk-1" not in proc.stdout + proc.stderr  # the routing key is not printed


def test_server_error_exits_1_with_the_status() -> None:
    with WebhookReceiver(secret=SECRET, default_status=500) as receiver:
        proc = run_private(receiver.url, "--secret", SECRET, "--timeout-s", "3")
        assert receiver.wait_for(1, 5)
        received = receiver.received
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(received) == 1  # a single attempt: no retries
    assert field(proc.stdout, "status").startswith("500 ")
    assert field(proc.stdout, "response") == '{"ok":false}'
    assert "not delivered (HTTP 500)" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_client_error_exits_1() -> None:
    with WebhookReceiver(secret=SECRET, statuses=[404]) as receiver:
        proc = run_private(receiver.url, "--secret", SECRET)
    assert proc.returncode == 1
    assert field(proc.stdout, "status").startswith("404 ")


def test_unreachable_port_is_one_line_and_exit_1() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_private(f"http://127.0.0.1:{port}/", "--secret", SECRET)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("agentwatch: webhook test failed: no response from")
    assert "Connection refused" in lines[0] or "ConnectionRefused" in lines[0]


def test_a_loopback_url_is_refused_without_allow_private() -> None:
    with WebhookReceiver(secret=SECRET) as receiver:
        proc = run("webhooks", "test", receiver.url, "--secret", SECRET)
        received = receiver.received
    assert received == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "agentwatch: webhook test not sent: destination refused: 127.0.0.1 is a loopback address"
    )
    assert line.endswith("(or --allow-private)")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["http://127.0.0.1:1/"], {}, "a signing secret is needed"),
        (["ftp://example.com/", "--secret", "s"], {}, "must be http:// or https://"),
        (
            ["http://127.0.0.1:1/", "--secret", "s", "--format", "pagerduty"],
            {},
            "--routing-key: needed with --format pagerduty",
        ),
    ],
)
def test_bad_arguments_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    proc = run("webhooks", "test", *args, **env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_lists_the_group() -> None:
    assert "webhooks" in run("--help").stdout
    proc = run("webhooks", "test", "--help")
    assert proc.returncode == 0
    for text in ("--secret", "AGENTWATCH_WEBHOOK_SECRET", "--format", "--timeout-s"):
        assert text in proc.stdout
