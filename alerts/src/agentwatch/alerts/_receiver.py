"""A small real webhook receiver: for ``agentwatch demo`` and for tests.

It listens on 127.0.0.1 (a free port by default), records every POST, checks its
signature when it knows the secret, and answers with a scripted behaviour: a status
sequence (``statuses=[500, 500, 200]``), extra response headers (``Retry-After``), a
response body of your own (``response_body``) or a delay before answering (``hang_s``)
to provoke client timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

import orjson

from agentwatch.alerts._formats import ACK_URL_KEY
from agentwatch.alerts._signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Secrets,
    SignatureError,
    secret_keys,
    verify,
)
from agentwatch.schemas import Alert

__all__ = ["ReceivedDelivery", "WebhookReceiver"]

logger = logging.getLogger("agentwatch.alerts.receiver")

_MAX_BODY_BYTES: Final = 1024 * 1024
_CONNECTION_TIMEOUT_S: Final = 5.0
_POLL_INTERVAL_S: Final = 0.05
_JOIN_TIMEOUT_S: Final = 10.0
_OK_BODY: Final = b'{"ok":true}'
_NOT_OK_BODY: Final = b'{"ok":false}'


@dataclass(frozen=True, slots=True)
class ReceivedDelivery:
    """One POST as the receiver saw it. ``headers`` keys are lower-case; ``verified`` is
    None when the receiver has no secret, else whether the signature checked out (and
    ``verify_error`` says why not)."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any
    verified: bool | None
    verify_error: str | None
    response_status: int
    received_at_s: float = field(repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def delivery_id(self) -> str | None:
        return self.header(DELIVERY_HEADER)

    @property
    def signature(self) -> str | None:
        return self.header(SIGNATURE_HEADER)

    def alert(self) -> Alert:
        """The body as an :class:`Alert` (pydantic ``ValidationError`` if it is not one);
        an acknowledgement link (``ack_url``) is left out."""
        if isinstance(self.json, dict) and ACK_URL_KEY in self.json:
            return Alert.model_validate_json(
                orjson.dumps({k: v for k, v in self.json.items() if k != ACK_URL_KEY})
            )
        return Alert.model_validate_json(self.body)

    @property
    def ack_url(self) -> str | None:
        """The acknowledgement link of a json body, when it has one."""
        url = self.json.get(ACK_URL_KEY) if isinstance(self.json, dict) else None
        return url if isinstance(url, str) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined by server_close()
    block_on_close = True

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        logger.debug("webhook receiver: error while handling %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _CONNECTION_TIMEOUT_S  # a silent client cannot pin a handler thread
    protocol_version = "HTTP/1.0"  # one request per connection

    def do_POST(self) -> None:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._reply(411, {})
            return
        length = int(length_text)
        if length > _MAX_BODY_BYTES:
            self._reply(413, {})
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver = self.server.receiver
        status, extra_headers, hang_s = receiver._record(self.path, headers, body)
        if hang_s > 0:
            receiver._stopping.wait(hang_s)
        self._reply(status, extra_headers, receiver._response_body)

    def _reply(
        self, status: int, extra_headers: Mapping[str, str], payload: bytes | None = None
    ) -> None:
        if payload is None:
            payload = _OK_BODY if 200 <= status < 300 else _NOT_OK_BODY
        self.send_response(status)
        if not any(name.lower() == "content-type" for name in extra_headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("webhook receiver: " + format, *args)


class WebhookReceiver:
    """An HTTP server on ``host`` (default 127.0.0.1) and a free port, run in a daemon
    thread; use it as a context manager or call :meth:`start` / :meth:`stop`.

    - ``secret``: check each request's signature (``verified`` on the delivery);
    - ``statuses``: the status of the 1st, 2nd, ... POST; later ones get ``default_status``;
    - ``response_headers``: added to every answer (e.g. ``{"Retry-After": "2"}``); a
      ``Content-Type`` given here replaces the default ``application/json``;
    - ``response_body``: the body of every answer (a str is sent UTF-8 encoded); by
      default ``{"ok":true}`` for a 2xx status and ``{"ok":false}`` otherwise;
    - ``hang_s``: wait this long before answering (cut short by :meth:`stop`);
    - ``on_receive``: called with each :class:`ReceivedDelivery`, in the handler thread,
      before the answer is sent; its exceptions are logged, not propagated.
    """

    def __init__(
        self,
        *,
        secret: Secrets | None = None,
        statuses: Sequence[int] = (),
        default_status: int = 200,
        response_headers: Mapping[str, str] | None = None,
        response_body: bytes | str | None = None,
        hang_s: float = 0.0,
        tolerance_s: int = 300,
        on_receive: Callable[[ReceivedDelivery], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if secret is not None:
            secret_keys(secret)  # ValueError for an empty secret, now rather than per request
        if hang_s < 0:
            raise ValueError(f"hang_s must be >= 0 (got {hang_s})")
        self._secret = secret
        self._statuses = tuple(statuses)
        self._default_status = default_status
        self._response_headers = dict(response_headers or {})
        self._response_body = (
            response_body.encode() if isinstance(response_body, str) else response_body
        )
        self._hang_s = hang_s
        self._tolerance_s = tolerance_s
        self._on_receive = on_receive
        self._address = (host, port)
        self._received: list[ReceivedDelivery] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("webhook receiver already started")
        self._stopping.clear()
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"agentwatch-webhook-receiver:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging handlers, close the socket. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()  # joins the handler threads
        if thread is not None:
            thread.join(_JOIN_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # inspection ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/`` once started."""
        if self._server is None:
            raise RuntimeError("webhook receiver is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def received(self) -> list[ReceivedDelivery]:
        """A snapshot of the deliveries so far, in arrival order."""
        with self._cond:
            return list(self._received)

    def wait_for(self, n: int, timeout_s: float) -> bool:
        """Block until at least ``n`` deliveries arrived; False if ``timeout_s`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._received) >= n, timeout_s)

    # handler side ----------------------------------------------------------------------

    def _record(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], float]:
        verified: bool | None = None
        verify_error: str | None = None
        if self._secret is not None:
            try:
                verify(
                    self._secret,
                    body,
                    headers.get(SIGNATURE_HEADER.lower()),
                    tolerance_s=self._tolerance_s,
                )
            except SignatureError as exc:
                verified, verify_error = False, str(exc)
            else:
                verified = True
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        with self._cond:
            index = len(self._received)
            status = self._statuses[index] if index < len(self._statuses) else self._default_status
            delivery = ReceivedDelivery(
                path=path,
                headers=headers,
                body=body,
                json=parsed,
                verified=verified,
                verify_error=verify_error,
                response_status=status,
                received_at_s=time.time(),
            )
            self._received.append(delivery)
            self._cond.notify_all()
        if self._on_receive is not None:
            try:
                self._on_receive(delivery)
            except Exception:
                logger.exception("webhook receiver: on_receive callback failed")
        return status, self._response_headers, self._hang_s
