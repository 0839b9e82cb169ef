"""The receiver code of README.md ("Send alerts to webhooks") works, on real signatures.

The standard-library snippet is cut out of the README and run as it stands: in this
process against ``sign()`` output and a real delivery, and in a Python without
site-packages (so without agentwatch) to show it needs nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentwatch.alerts import (
    SIGNATURE_HEADER,
    SignatureError,
    WebhookEndpoint,
    WebhookReceiver,
    deliver,
    load_endpoints,
    sign,
    verify,
)
from agentwatch.schemas import Alert, encode_alert

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Send alerts to webhooks"
SECRET = "whsec_readme"
OTHER_SECRET = "whsec_other"
TOLERANCE_S = 300

VerifySignature = Callable[[str, bytes, str], bool]


def section_code_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's webhooks section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def stdlib_snippet() -> str:
    (snippet,) = [code for code in section_code_blocks("python") if "def verify_signature" in code]
    return snippet


@pytest.fixture(scope="module")
def verify_signature() -> VerifySignature:
    namespace: dict[str, object] = {"__name__": "readme_snippet"}
    exec(compile(stdlib_snippet(), "README.md", "exec"), namespace)  # noqa: S102 - our README
    function = namespace["verify_signature"]
    assert callable(function)
    return function  # type: ignore[return-value]


@pytest.fixture
def body(alert: Alert) -> bytes:
    return encode_alert(alert)


def test_the_snippet_uses_only_the_standard_library() -> None:
    snippet = stdlib_snippet()
    imports = set(re.findall(r"^(?:import|from) (\w+)", snippet, re.MULTILINE))
    assert imports == {"hashlib", "hmac", "time"}
    assert "agentwatch" not in snippet
    assert "compare_digest" in snippet


def test_accepts_a_good_signature(verify_signature: VerifySignature, body: bytes) -> None:
    assert verify_signature(SECRET, body, sign(SECRET, body)) is True


def test_rejects_a_tampered_body(verify_signature: VerifySignature, body: bytes) -> None:
    header = sign(SECRET, body)
    tampered = body.replace(b'"state":"firing"', b'"state":"resolved"', 1)
    assert tampered != body
    assert verify_signature(SECRET, tampered, header) is False
    assert verify_signature(SECRET, body + b" ", header) is False


def test_rejects_a_wrong_secret(verify_signature: VerifySignature, body: bytes) -> None:
    assert verify_signature(OTHER_SECRET, body, sign(SECRET, body)) is False


@pytest.mark.parametrize("age_s", [TOLERANCE_S + 2, 600, 86_400, -(TOLERANCE_S + 2)])
def test_rejects_a_stale_or_future_timestamp(
    verify_signature: VerifySignature, body: bytes, age_s: int
) -> None:
    header = sign(SECRET, body, timestamp_s=int(time.time()) - age_s)
    assert verify_signature(SECRET, body, header) is False


def test_accepts_a_timestamp_within_the_tolerance(
    verify_signature: VerifySignature, body: bytes
) -> None:
    header = sign(SECRET, body, timestamp_s=int(time.time()) - 60)
    assert verify_signature(SECRET, body, header) is True


def test_accepts_any_of_several_v1_entries(verify_signature: VerifySignature, body: bytes) -> None:
    rotating = sign([OTHER_SECRET, SECRET], body)  # a sender rotating: two v1 entries
    assert rotating.count("v1=") == 2
    assert verify_signature(SECRET, body, rotating) is True
    assert verify_signature(OTHER_SECRET, body, rotating) is True
    assert verify_signature("third", body, rotating) is False


def test_ignores_other_schemes(verify_signature: VerifySignature, body: bytes) -> None:
    header = sign(SECRET, body).replace(",v1=", ",v2=0000,v1=", 1)
    assert verify_signature(SECRET, body, header) is True


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=,v1=",
        "v1=" + "0" * 64,
        "t=abc,v1=" + "0" * 64,
        "t=²,v1=" + "0" * 64,
        "t=1,v1=é",
        "t=" + "9" * 400 + ",v1=" + "0" * 64,
        "t=999999999999,v1=" + "0" * 64,
    ],
)
def test_rejects_malformed_headers_without_raising(
    verify_signature: VerifySignature, body: bytes, header: str
) -> None:
    assert verify_signature(SECRET, body, header) is False


def test_rejects_a_missing_header(verify_signature: VerifySignature, body: bytes) -> None:
    assert verify_signature(SECRET, body, None) is False  # type: ignore[arg-type]


def test_agrees_with_the_library_verify(verify_signature: VerifySignature, body: bytes) -> None:
    now_s = int(time.time())
    cases = [
        (SECRET, body, sign(SECRET, body)),
        (SECRET, body + b"x", sign(SECRET, body)),
        (OTHER_SECRET, body, sign(SECRET, body)),
        (SECRET, body, sign(SECRET, body, timestamp_s=now_s - 3600)),
        (SECRET, body, sign([OTHER_SECRET, SECRET], body)),
    ]
    for secret, raw, header in cases:
        try:
            verify(secret, raw, header, tolerance_s=TOLERANCE_S)
        except SignatureError:
            library = False
        else:
            library = True
        assert verify_signature(secret, raw, header) is library, header


def test_accepts_a_real_delivery(verify_signature: VerifySignature, alert: Alert) -> None:
    with WebhookReceiver() as receiver:
        result = deliver(WebhookEndpoint("readme", receiver.url, SECRET, allow_private=True), alert)
        (delivery,) = receiver.received
    assert result.delivered
    assert delivery.signature
    assert verify_signature(SECRET, delivery.body, delivery.signature) is True
    assert verify_signature(OTHER_SECRET, delivery.body, delivery.signature) is False


def test_runs_without_agentwatch_installed(body: bytes) -> None:
    """The snippet in a Python without site-packages: agentwatch is not importable."""
    now_s = int(time.time())
    cases = [
        (SECRET, body, sign(SECRET, body), True),
        (SECRET, body + b"x", sign(SECRET, body), False),
        (OTHER_SECRET, body, sign(SECRET, body), False),
        (SECRET, body, sign(SECRET, body, timestamp_s=now_s - 600), False),
        (SECRET, body, sign([OTHER_SECRET, SECRET], body), True),
    ]
    driver = stdlib_snippet() + (
        "\nimport json, sys\n"
        "try:\n"
        "    import agentwatch\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('agentwatch is importable')\n"
        "for secret, body, header in json.load(sys.stdin):\n"
        "    print(verify_signature(secret, body.encode('latin-1'), header))\n"
    )
    payload = json.dumps([[s, b.decode("latin-1"), h] for s, b, h, _ in cases])
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", driver],
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(expected) for *_, expected in cases]


def test_the_library_example_compiles_and_names_real_helpers() -> None:
    (example,) = [
        code
        for code in section_code_blocks("python")
        if "from agentwatch.alerts import" in code
    ]
    compile(example, "README.md", "exec")
    for name in ("DELIVERY_HEADER", "SIGNATURE_HEADER", "SignatureError", "verify"):
        assert name in example
    assert SIGNATURE_HEADER == "X-Agentwatch-Signature"


def test_the_readme_endpoints_example_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (example,) = [code for code in section_code_blocks("yaml") if "endpoints:" in code]
    path = tmp_path / "endpoints.yaml"
    path.write_text(example, encoding="utf-8")
    monkeypatch.setenv("AGENTWATCH_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "pd-routing-key")
    endpoints = load_endpoints(path)
    assert [e.format for e in endpoints] == ["json", "slack", "pagerduty"]
    assert all(e.secret == SECRET for e in endpoints)
    assert (endpoints[1].escalate_to, endpoints[1].escalate_after_s) == ("pagerduty", 600)
    assert endpoints[2].routing_key == "pd-routing-key"


def test_the_readme_rotation_steps_load_as_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 1 signs with the new and the old secret, step 3 with the new one only."""
    text = README.read_text(encoding="utf-8")
    start = text.index("**Rotate a signing secret**")
    steps = re.findall(r"^( +)```yaml\n(.*?)^\1```$", text[start:], re.MULTILINE | re.DOTALL)
    assert len(steps) >= 2
    monkeypatch.setenv("AGENTWATCH_WEBHOOK_SECRET", OTHER_SECRET)  # the old one
    monkeypatch.setenv("AGENTWATCH_WEBHOOK_SECRET_NEW", SECRET)
    loaded = []
    for index, (indent, fragment) in enumerate(steps[:2]):
        lines = [line.removeprefix(indent) for line in fragment.splitlines()]
        path = tmp_path / f"step{index}.yaml"
        path.write_text("endpoints:\n" + "\n".join(lines) + "\n", encoding="utf-8")
        (endpoint,) = load_endpoints(path)
        loaded.append(endpoint.secrets)
    assert loaded == [[SECRET, OTHER_SECRET], [SECRET]]
