from __future__ import annotations

import hashlib
import hmac
import re
import uuid

import pytest

from agentwatch.alerts import SignatureError, delivery_id, sign, verify
from agentwatch.schemas.errors import AgentwatchError

SECRET = "whsec_test"
BODY = b'{"alert_id":"a1","state":"firing"}'
NOW_S = 1_763_629_201


def test_sign_then_verify_accepts() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S)
    verify(SECRET, BODY, header, now_s=NOW_S)


def test_sign_produces_timestamp_and_one_v1_hex_digest() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S)
    assert re.fullmatch(rf"t={NOW_S},v1=[0-9a-f]{{64}}", header)


def test_v1_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW_S}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, timestamp_s=NOW_S) == f"t={NOW_S},v1={expected}"


def test_str_and_bytes_secrets_sign_alike() -> None:
    assert sign(SECRET, BODY, timestamp_s=NOW_S) == sign(SECRET.encode(), BODY, timestamp_s=NOW_S)


def test_sign_defaults_to_the_current_time() -> None:
    verify(SECRET, BODY, sign(SECRET, BODY), tolerance_s=60)


def test_verify_rejects_tampered_body() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY.replace(b"firing", b"resolved"), header, now_s=NOW_S)


def test_verify_rejects_wrong_secret() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S)
    with pytest.raises(SignatureError, match="does not match"):
        verify("another-secret", BODY, header, now_s=NOW_S)


def test_verify_rejects_timestamp_changed_after_signing() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S).replace(f"t={NOW_S}", f"t={NOW_S + 1}")
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, BODY, header, now_s=NOW_S)


def test_verify_rejects_stale_timestamp() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S - 301)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, BODY, header, tolerance_s=300, now_s=NOW_S)


def test_verify_rejects_future_timestamp() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S + 301)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, BODY, header, tolerance_s=300, now_s=NOW_S)


@pytest.mark.parametrize("offset_s", [-300, 300])
def test_verify_accepts_timestamp_exactly_at_the_tolerance(offset_s: int) -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S + offset_s)
    verify(SECRET, BODY, header, tolerance_s=300, now_s=NOW_S)


def test_verify_rejects_missing_header() -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, BODY, None, now_s=NOW_S)


_GOOD_V1 = "ab" * 32


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={_GOOD_V1}",
        f"t={NOW_S}",
        f"t=abc,v1={_GOOD_V1}",
        f"t=-5,v1={_GOOD_V1}",
        f"t={NOW_S},t={NOW_S},v1={_GOOD_V1}",
        f"t={NOW_S},v1=zz{_GOOD_V1[2:]}",
        f"t={NOW_S},v1=abcd",
        f"t={NOW_S},={_GOOD_V1}",
        f"t={NOW_S},v1={_GOOD_V1},",
        f"t={NOW_S},v0={_GOOD_V1}",
        f"t={NOW_S}," + ",".join(f"v1={_GOOD_V1}" for _ in range(100)),
    ],
)
def test_verify_rejects_malformed_header(header: str) -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, BODY, header, now_s=NOW_S)


def test_sign_with_two_secrets_emits_two_v1_entries() -> None:
    header = sign(("old-secret", "new-secret"), BODY, timestamp_s=NOW_S)
    assert header.count("v1=") == 2


@pytest.mark.parametrize("receiver_secret", ["old-secret", "new-secret"])
def test_verify_accepts_either_v1_entry_during_rotation(receiver_secret: str) -> None:
    header = sign(("old-secret", "new-secret"), BODY, timestamp_s=NOW_S)
    verify(receiver_secret, BODY, header, now_s=NOW_S)


def test_verify_with_several_secrets_accepts_any_of_them() -> None:
    header = sign("new-secret", BODY, timestamp_s=NOW_S)
    verify(["old-secret", "new-secret"], BODY, header, now_s=NOW_S)


def test_verify_ignores_unknown_schemes_next_to_v1() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S) + ",v2=something-newer"
    verify(SECRET, BODY, header, now_s=NOW_S)


def test_verify_accepts_spaces_after_commas() -> None:
    header = sign(SECRET, BODY, timestamp_s=NOW_S).replace(",", ", ")
    verify(SECRET, BODY, header, now_s=NOW_S)


def test_signature_error_belongs_to_the_agentwatch_tree_and_is_a_value_error() -> None:
    assert issubclass(SignatureError, AgentwatchError)
    assert issubclass(SignatureError, ValueError)


@pytest.mark.parametrize("secret", ["", b"", ()])
def test_sign_rejects_an_empty_secret(secret: str | bytes | tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(secret, BODY)


def test_delivery_id_is_stable_for_the_same_alert_state_and_endpoint() -> None:
    first = delivery_id("a1", "firing", "ops")
    assert first == delivery_id("a1", "firing", "ops")
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    "other", [("a2", "firing", "ops"), ("a1", "resolved", "ops"), ("a1", "firing", "billing")]
)
def test_delivery_id_differs_when_alert_state_or_endpoint_differs(
    other: tuple[str, str, str],
) -> None:
    assert delivery_id("a1", "firing", "ops") != delivery_id(*other)
