"""Webhook signatures and delivery ids.

The signature header carries a unix timestamp and one or more HMAC-SHA256 digests::

    X-Agentwatch-Signature: t=1763629201,v1=5257a869...,v1=9e1f03b2...

Each ``v1`` is ``hex(HMAC-SHA256(secret, f"{t}.".encode() + body))``. While a secret is
being rotated the sender signs with the old and the new secret, so the header holds two
``v1`` entries and a receiver holding either secret accepts the request. Schemes other
than ``v1`` are ignored (room for a future ``v2``).

The delivery id (``X-Agentwatch-Delivery``) is a UUID5 of ``(alert_id, state, endpoint
name)``: every retry of one delivery, in any process, carries the same id, so a receiver
can use it as its idempotency key.

An **acknowledgement link** (:func:`ack_signature`, :func:`verify_ack`) carries the alert
id, the endpoint it was sent to, an expiry (unix seconds) and
``hex(HMAC-SHA256(secret, "ack\x1f<alert_id>\x1f<endpoint>\x1f<expires>"))`` with the
endpoint's first secret; the dispatcher's ack server accepts it with any of the
endpoint's secrets (rotation) until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from typing import Final, TypeAlias

from agentwatch.schemas.errors import AgentwatchError

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "Secret",
    "Secrets",
    "SignatureError",
    "ack_signature",
    "delivery_id",
    "secret_keys",
    "sign",
    "verify",
    "verify_ack",
]

SIGNATURE_HEADER: Final = "X-Agentwatch-Signature"
DELIVERY_HEADER: Final = "X-Agentwatch-Delivery"

Secret: TypeAlias = str | bytes
Secrets: TypeAlias = str | bytes | Sequence[str | bytes]
"""One secret, or several while rotating (sign with all; accept any)."""

_SCHEME: Final = "v1"
_DIGEST_HEX_LEN: Final = 64
_MAX_HEADER_LEN: Final = 4096
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
# Fixed namespace of delivery ids; changing it would change every id, so never do.
_DELIVERY_NAMESPACE: Final = uuid.UUID("5f0b8e0c-3d4a-5b7e-9c21-6a1d2f3e4b5c")


class SignatureError(AgentwatchError, ValueError):
    """A webhook request failed verification: malformed header, wrong signature or a
    timestamp outside the tolerance. The message says which."""


def secret_keys(secret: Secrets) -> list[bytes]:
    """The HMAC keys of one secret or a rotation sequence; ValueError when empty."""
    items: Sequence[str | bytes] = [secret] if isinstance(secret, str | bytes) else secret
    keys = [s.encode() if isinstance(s, str) else bytes(s) for s in items]
    if not keys or any(not k for k in keys):
        raise ValueError("webhook secret must be a non-empty string or bytes")
    return keys


def _digest(key: bytes, timestamp_s: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp_s + body, hashlib.sha256).hexdigest()


def sign(secret: Secrets, body: bytes, *, timestamp_s: int | None = None) -> str:
    """The ``X-Agentwatch-Signature`` value for ``body``: ``t=<unix>,v1=<hex>``, with one
    ``v1`` per secret when ``secret`` is a sequence (rotation). ``timestamp_s`` defaults
    to now."""
    keys = secret_keys(secret)
    t = int(time.time()) if timestamp_s is None else timestamp_s
    if t < 0:
        raise ValueError(f"timestamp_s must be >= 0 (got {t})")
    return ",".join([f"t={t}", *(f"{_SCHEME}={_digest(k, t, body)}" for k in keys)])


def _parse(header: str) -> tuple[int, list[str]]:
    if len(header) > _MAX_HEADER_LEN:
        raise SignatureError(f"malformed signature header: longer than {_MAX_HEADER_LEN} chars")
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            raise SignatureError(f"malformed signature header: bad element {part.strip()!r}")
        if name == "t":
            if timestamp is not None:
                raise SignatureError("malformed signature header: more than one t=")
            if not (value.isascii() and value.isdigit()):
                raise SignatureError(f"malformed signature header: t is not a unix time: {value!r}")
            timestamp = int(value)
        elif name == _SCHEME:
            digest = value.lower()
            if len(digest) != _DIGEST_HEX_LEN or not set(digest) <= _HEX_DIGITS:
                raise SignatureError("malformed signature header: v1 is not 64 hex digits")
            digests.append(digest)
        # other schemes are ignored on purpose (forward compatibility)
    if timestamp is None:
        raise SignatureError("malformed signature header: no t= timestamp")
    if not digests:
        raise SignatureError("malformed signature header: no v1= signature")
    return timestamp, digests


def verify(
    secret: Secrets,
    body: bytes,
    header: str | None,
    *,
    tolerance_s: int = 300,
    now_s: int | None = None,
) -> None:
    """Check a signature header against the raw request ``body``; return ``None`` or raise
    :class:`SignatureError`.

    Accepts the request when any ``v1`` entry matches any of the secrets (rotation on
    either side), compared in constant time, and the timestamp lies within
    ``tolerance_s`` of ``now_s`` (default: now) in either direction (replay protection).
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0 (got {tolerance_s})")
    keys = secret_keys(secret)
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp_s, digests = _parse(header)
    expected = [_digest(k, timestamp_s, body) for k in keys]
    if not any(hmac.compare_digest(e, d) for e in expected for d in digests):
        raise SignatureError("signature does not match the body and secret")
    now = int(time.time()) if now_s is None else now_s
    if abs(now - timestamp_s) > tolerance_s:
        raise SignatureError(
            f"signature timestamp {timestamp_s} is {now - timestamp_s:+d} s from now, "
            f"outside the tolerance of {tolerance_s} s"
        )


def delivery_id(alert_id: str, state: str, endpoint_name: str) -> str:
    """Stable id of delivering one alert state change to one endpoint (UUID5 form).

    The same ``(alert_id, state, endpoint_name)`` always gives the same id, in any
    process, so retries and redeliveries after a restart share it: receivers use it as
    their idempotency key. The firing and the resolution of one alert get different ids.
    """
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{alert_id}\x1f{state}\x1f{endpoint_name}"))


def _ack_message(alert_id: str, endpoint_name: str, expires_s: int) -> bytes:
    return f"ack\x1f{alert_id}\x1f{endpoint_name}\x1f{expires_s}".encode()


def ack_signature(secret: Secret, alert_id: str, endpoint_name: str, expires_s: int) -> str:
    """The hex HMAC of an acknowledgement link (module docstring)."""
    (key,) = secret_keys([secret])
    return hmac.new(
        key, _ack_message(alert_id, endpoint_name, expires_s), hashlib.sha256
    ).hexdigest()


def verify_ack(
    secret: Secrets,
    alert_id: str,
    endpoint_name: str,
    expires_s: int,
    signature: str,
    *,
    now_s: int | None = None,
) -> None:
    """Return ``None`` when ``signature`` is a valid, unexpired acknowledgement link for
    ``(alert_id, endpoint_name, expires_s)`` under any of the secrets; raise
    :class:`SignatureError` saying why not."""
    keys = secret_keys(secret)
    digest = signature.lower()
    if len(digest) != _DIGEST_HEX_LEN or not set(digest) <= _HEX_DIGITS:
        raise SignatureError("malformed acknowledgement link: sig is not 64 hex digits")
    message = _ack_message(alert_id, endpoint_name, expires_s)
    expected = [hmac.new(k, message, hashlib.sha256).hexdigest() for k in keys]
    if not any(hmac.compare_digest(e, digest) for e in expected):
        raise SignatureError("acknowledgement link signature does not match")
    now = int(time.time()) if now_s is None else now_s
    if now > expires_s:
        raise SignatureError(f"acknowledgement link expired {now - expires_s} s ago")
