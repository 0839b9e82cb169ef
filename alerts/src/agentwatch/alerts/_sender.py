"""Synchronous webhook delivery: one alert, one endpoint, retries with backoff.

The pieces (:func:`post_once`, :func:`backoff_delay_s`, :func:`parse_retry_after_s`) are
kept separate so the async dispatcher can reuse them with its own queues and clock.

Retry policy: 5xx, 408, 429, network errors and timeouts are retried with exponential
backoff and full jitter (``rng() * min(backoff_max_s, backoff_initial_s * 2**(n-1))``
before attempt ``n + 1``); a ``Retry-After`` header (seconds or an HTTP date) replaces
the computed delay, capped at ``backoff_max_s``. Other 4xx, 3xx (redirects are not
followed: the signature is bound to the configured URL) and TLS certificate errors are
final. Every attempt is signed afresh (a new ``t=``) over the same body and carries the
same delivery id.

Destinations: unless the endpoint sets ``allow_private``, the connection goes only to a
public address, checked at connect time on the address connected to (see
:mod:`agentwatch.alerts._destinations`); a refused destination is final (not
retried: the address will not become public by waiting) and its error names the
endpoint and ``allow_private``.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache, partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final
from urllib.parse import urlsplit

from agentwatch.alerts._destinations import (
    DestinationRefusedError,
    Destinations,
    Resolver,
    check_host,
)
from agentwatch.alerts._signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Secrets,
    delivery_id,
    secret_keys,
    sign,
)
from agentwatch.schemas import Alert, encode_alert
from agentwatch.schemas.backoff import Backoff

__all__ = [
    "AttemptOutcome",
    "DeliveryResult",
    "WebhookEndpoint",
    "backoff_delay_s",
    "deliver",
    "is_retryable_status",
    "parse_retry_after_s",
    "post_once",
]

logger = logging.getLogger("agentwatch.alerts")

_RETRYABLE_4XX: Final = frozenset({408, 429})
_ERROR_SNIPPET_CHARS: Final = 200
_MAX_RESPONSE_BYTES: Final = 64 * 1024


@cache
def _user_agent() -> str:
    try:
        return f"agentwatch/{version('agentwatch-alerts')}"
    except PackageNotFoundError:  # running from a source tree without metadata
        return "agentwatch/0+unknown"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where and how to deliver alerts. ``name`` identifies the endpoint in delivery ids
    (keep it stable when the URL changes); ``secret`` may be a tuple while rotating (each
    request then carries one ``v1`` per secret).

    ``allow_private`` lets the endpoint reach loopback, private, link-local and metadata
    addresses (a local receiver); without it those are refused at connect time.
    ``resolver`` replaces the system's name lookup (``(host, port) -> addresses``), for
    tests."""

    name: str
    url: str
    secret: Secrets = field(repr=False)
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    allow_private: bool = False
    resolver: Resolver | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("webhook endpoint name must not be empty")
        if not self.url.isascii() or any(c.isspace() or not c.isprintable() for c in self.url):
            raise ValueError(f"webhook url must be ASCII without spaces (got {self.url!r})")
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"webhook url must be http:// or https:// with a host (got {self.url!r})"
            )
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"webhook url has a bad port: {self.url!r} ({exc})") from None
        secret_keys(self.secret)  # raises ValueError for an empty secret
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (got {self.timeout_s})")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {self.max_attempts})")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(
                "need 0 <= backoff_initial_s <= backoff_max_s "
                f"(got {self.backoff_initial_s}, {self.backoff_max_s})"
            )


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one POST did. ``status_code`` is None when no HTTP response came back.

    ``body`` is the start of the response body (at most the first 64 KiB, raw bytes; empty
    when the answer had none) and ``content_type`` its ``Content-Type`` header, for 2xx
    and other answers alike; both are None when no HTTP response came back.

    ``refused`` says the destination was refused (an address the endpoint may not reach
    without ``allow_private``): no request was sent, and retrying cannot help.
    """

    ok: bool
    retryable: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    body: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    refused: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The end of one delivery: delivered or given up (then dead-letter it)."""

    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None
    delivery_id: str
    endpoint: str
    elapsed_s: float


def is_retryable_status(status_code: int) -> bool:
    """5xx, 408 and 429 are worth another try; everything else is final."""
    return status_code >= 500 or status_code in _RETRYABLE_4XX


def parse_retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None if absent
    or unparsable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta_s = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta_s)


def backoff_delay_s(
    endpoint: WebhookEndpoint,
    failed_attempts: int,
    *,
    rng: Callable[[], float] = random.random,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait after ``failed_attempts`` failures (>= 1): the server's
    ``Retry-After`` when given, else full jitter over the exponential ceiling; both capped
    at ``backoff_max_s``. Only the delay: the dispatcher's retries wait on its heap (a
    lane serves other deliveries meanwhile), :func:`deliver` in its ``sleep``."""
    if retry_after_s is not None:
        return min(max(0.0, retry_after_s), endpoint.backoff_max_s)
    schedule = Backoff(endpoint.backoff_initial_s, endpoint.backoff_max_s, jitter=True, rng=rng)
    return schedule.delay_s(failed_attempts)


class _GuardedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket goes only to the addresses ``destinations``
    permits (it replaces ``socket.create_connection``, which ``connect`` calls through
    the ``_create_connection`` attribute; the destination tests fail if that changes)."""

    def __init__(self, *args: Any, destinations: Destinations, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = destinations.connect


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    """The same for HTTPS; TLS still checks the certificate against the host name."""

    def __init__(self, *args: Any, destinations: Destinations, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = destinations.connect


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, destinations: Destinations) -> None:
        super().__init__()
        self._destinations = destinations

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            partial(_GuardedHTTPConnection, destinations=self._destinations),
            req,
        )


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, destinations: Destinations) -> None:
        super().__init__()
        self._destinations = destinations

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            partial(_GuardedHTTPSConnection, destinations=self._destinations),
            req,
        )


def _opener(
    proxies: dict[str, str], destinations: Destinations | None
) -> urllib.request.OpenerDirector:
    """urllib's default chain minus the redirect handler: a 3xx is a final answer (the
    signature is bound to the configured URL, and following redirects invites SSRF).
    With ``destinations`` the sockets go only where it permits; None (the request goes
    through a proxy, checked before) connects as urllib does."""
    opener = urllib.request.OpenerDirector()
    http_handler, https_handler = (
        (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler())
        if destinations is None
        else (_GuardedHTTPHandler(destinations), _GuardedHTTPSHandler(destinations))
    )
    for handler in (
        urllib.request.ProxyHandler(proxies),
        http_handler,
        https_handler,
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _via_proxy(url: str, proxies: dict[str, str]) -> bool:
    """Whether urllib's ProxyHandler sends a request for ``url`` through a proxy."""
    parts = urlsplit(url)
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.netloc)


def _snippet(raw: bytes) -> str:
    text = raw[:_ERROR_SNIPPET_CHARS].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def _read_and_close(exc: urllib.error.HTTPError) -> bytes:
    """The start of an error response body; always releases the connection."""
    if exc.fp is None:
        return b""
    try:
        return exc.read(_MAX_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        exc.close()


def post_once(
    endpoint: WebhookEndpoint,
    body: bytes,
    *,
    delivery_id: str,
    timestamp_s: int | None = None,
) -> AttemptOutcome:
    """One signed POST of ``body``. Never raises for HTTP or network failures."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _user_agent(),
        SIGNATURE_HEADER: sign(endpoint.secret, body, timestamp_s=timestamp_s),
        DELIVERY_HEADER: delivery_id,
    }
    request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked in WebhookEndpoint
    destinations = Destinations(endpoint.name, endpoint.allow_private, endpoint.resolver)
    proxies = urllib.request.getproxies()
    via_proxy = _via_proxy(endpoint.url, proxies)
    try:
        if via_proxy:  # the proxy connects for us: check the destination's addresses now
            parts = urlsplit(endpoint.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            check_host(destinations, parts.hostname or "", port)
        opener = _opener(proxies, None if via_proxy else destinations)
        with opener.open(request, timeout=endpoint.timeout_s) as response:
            raw = response.read(_MAX_RESPONSE_BYTES)
            status: int = response.status
            content_type: str | None = response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        raw = _read_and_close(exc)
        answer = exc.headers
        retry_after_s = parse_retry_after_s(answer.get("Retry-After") if answer else None)
        return AttemptOutcome(
            ok=False,
            retryable=is_retryable_status(exc.code),
            status_code=exc.code,
            error=f"HTTP {exc.code}{_snippet(raw)}",
            retry_after_s=retry_after_s,
            body=raw,
            content_type=answer.get("Content-Type") if answer else None,
        )
    except (urllib.error.URLError, DestinationRefusedError) as exc:
        # a refusal comes wrapped in URLError from the connection, bare from check_host
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        refused = isinstance(reason, DestinationRefusedError)
        final = refused or isinstance(reason, ssl.SSLCertVerificationError)
        error = str(reason) if refused else f"{type(reason).__name__}: {reason}"
        return AttemptOutcome(ok=False, retryable=not final, error=error, refused=refused)
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad responses
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return AttemptOutcome(ok=False, retryable=True, error=error)
    except ValueError as exc:  # e.g. http.client.InvalidURL: retrying cannot help
        return AttemptOutcome(ok=False, retryable=False, error=f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return AttemptOutcome(
            ok=True, retryable=False, status_code=status, body=raw, content_type=content_type
        )
    return AttemptOutcome(
        ok=False,
        retryable=is_retryable_status(status),
        status_code=status,
        error=f"HTTP {status}{_snippet(raw)}",
        body=raw,
        content_type=content_type,
    )


def deliver(
    endpoint: WebhookEndpoint,
    alert: Alert,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> DeliveryResult:
    """POST ``alert`` to ``endpoint``, retrying as the module docstring says, and report
    how it ended. Blocks for the whole retry sequence; never raises for HTTP or network
    failures (``delivered=False`` then, ready for the dead-letter topic)."""
    body = encode_alert(alert)
    did = delivery_id(alert.alert_id, alert.state, endpoint.name)
    started = time.monotonic()
    attempts = 0
    outcome = AttemptOutcome(ok=False, retryable=True)
    while attempts < endpoint.max_attempts:
        attempts += 1
        outcome = post_once(endpoint, body, delivery_id=did)
        if outcome.ok or not outcome.retryable or attempts >= endpoint.max_attempts:
            break
        delay_s = backoff_delay_s(endpoint, attempts, rng=rng, retry_after_s=outcome.retry_after_s)
        logger.debug(
            "webhook %s: attempt %d for delivery %s failed (%s); retrying in %.2f s",
            endpoint.name,
            attempts,
            did,
            outcome.error,
            delay_s,
        )
        sleep(delay_s)
    if not outcome.ok:
        logger.warning(
            "webhook %s: delivery %s of alert %s failed after %d attempt(s): %s",
            endpoint.name,
            did,
            alert.alert_id,
            attempts,
            outcome.error,
        )
    return DeliveryResult(
        delivered=outcome.ok,
        attempts=attempts,
        status_code=outcome.status_code,
        error=outcome.error,
        delivery_id=did,
        endpoint=endpoint.name,
        elapsed_s=time.monotonic() - started,
    )
