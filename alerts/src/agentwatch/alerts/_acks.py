"""Acknowledgements: the record, the signed links in webhook bodies, the link server.

An :class:`Ack` says who took an alert and when. It is written where every dispatcher
reads it: on Kafka, the compacted topic ``agentwatch.acks`` (key = alert id; one record
per alert is all that matters), read from its beginning when the dispatcher starts and
followed afterwards; ``agentwatch sink`` stores it in the ``alert_acks`` table. The
embedded pipeline applies it in-process and stores it in chDB directly.

:class:`AckLinks` makes the link put in each firing's body::

    <base_url>/ack?a=<alert id>&e=<endpoint>&x=<expires, unix s>&s=<hex HMAC>

signed with the endpoint's secret (:func:`~agentwatch.alerts.ack_signature`).
:class:`AckServer` serves it (aiohttp, in a thread of its own): ``GET`` answers a small
page with a form, so a chat client that prefetches links acknowledges nothing; ``POST``
(form field ``by``: who) acknowledges. A tampered, unknown or expired link gets 403.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode, urlsplit

from agentwatch.alerts._signing import SignatureError, ack_signature, verify_ack
from agentwatch.schemas import MAX_ACK_BY_CHARS as MAX_BY_CHARS
from agentwatch.schemas import Ack, format_ts
from agentwatch.schemas.settings import ACKS_TOPIC

if TYPE_CHECKING:
    from aiohttp import web

    from agentwatch.alerts._endpoints import EndpointConfig

__all__ = [
    "ACKS_TOPIC",
    "ACK_PATH",
    "Ack",
    "AckLinks",
    "AckServer",
    "parse_listen",
]

log = logging.getLogger("agentwatch.webhooks")

ACK_PATH: Final = "/ack"
_START_TIMEOUT_S: Final = 10.0


def parse_listen(value: str, *, what: str = "ack_listen") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError naming ``what``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what}: expected HOST:PORT, e.g. 127.0.0.1:8788 (got {value!r})")
    return host.strip("[]"), int(port)


class AckLinks:
    """Signed, expiring acknowledgement links under ``base_url`` (module docstring)."""

    def __init__(
        self, base_url: str, ttl_s: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"ack_base_url: must be http:// or https:// with a host ({base_url!r})"
            )
        if ttl_s < 1:
            raise ValueError(f"ack_ttl_s: {ttl_s} is not >= 1")
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self._clock = clock

    def url(self, alert_id: str, endpoint: EndpointConfig) -> str:
        expires_s = int(self._clock()) + self.ttl_s
        sig = ack_signature(endpoint.secrets[0], alert_id, endpoint.name, expires_s)
        query = urlencode({"a": alert_id, "e": endpoint.name, "x": expires_s, "s": sig})
        return f"{self.base_url}{ACK_PATH}?{query}"

    def check(
        self, query: Mapping[str, str], endpoints: Mapping[str, EndpointConfig]
    ) -> tuple[str, str]:
        """(alert id, endpoint name) of a valid link's query; SignatureError otherwise."""
        alert_id, name, expires, sig = (query.get(k, "") for k in ("a", "e", "x", "s"))
        if not alert_id or not name or not expires.isdigit() or not sig:
            raise SignatureError("malformed acknowledgement link: a, e, x and s are needed")
        endpoint = endpoints.get(name)
        if endpoint is None:
            raise SignatureError("acknowledgement link names no endpoint of this dispatcher")
        verify_ack(endpoint.secrets, alert_id, name, int(expires), sig, now_s=int(self._clock()))
        return alert_id, name


_PAGE: Final = (
    '<!doctype html><html><head><meta charset="utf-8"><title>agentwatch</title></head>'
    '<body style="font-family:sans-serif;max-width:40em;margin:3em auto">{content}</body></html>'
)


def _page(content: str) -> str:
    return _PAGE.format(content=content)


class AckServer:
    """The acknowledgement link server: an aiohttp app on ``host:port`` in a daemon
    thread with its own event loop. ``on_ack(ack)`` makes the ack durable and applies it
    (it runs on the server's thread; an exception answers 503)."""

    def __init__(
        self,
        links: AckLinks,
        endpoints: Sequence[EndpointConfig],
        on_ack: Callable[[Ack], object],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.links = links
        self._endpoints = {e.name: e for e in endpoints}
        self._on_ack = on_ack
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.bound_port = 0

    def _app(self) -> web.Application:
        from aiohttp import web  # noqa: PLC0415 - only when the server runs

        app = web.Application(client_max_size=16 * 1024)
        app.router.add_get(ACK_PATH, self._get)
        app.router.add_post(ACK_PATH, self._post)
        return app

    def _check(self, request: web.Request) -> tuple[str, str] | web.Response:
        from aiohttp import web  # noqa: PLC0415

        try:
            return self.links.check(request.query, self._endpoints)
        except SignatureError as exc:
            return web.Response(
                status=403,
                text=_page(
                    f"<p>This link does not acknowledge anything: {html.escape(str(exc))}.</p>"
                ),
                content_type="text/html",
            )

    async def _get(self, request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415

        checked = self._check(request)
        if isinstance(checked, web.Response):
            return checked
        alert_id, _endpoint = checked
        form = (
            f"<h1>Acknowledge alert</h1><p>{html.escape(alert_id)}</p>"
            f'<form method="post" action="{html.escape(request.path_qs)}">'
            f'<label>Your name <input name="by" maxlength="{MAX_BY_CHARS}" required></label> '
            '<button type="submit">Acknowledge</button></form>'
        )
        return web.Response(text=_page(form), content_type="text/html")

    async def _post(self, request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415

        checked = self._check(request)
        if isinstance(checked, web.Response):
            return checked
        alert_id, endpoint = checked
        form = await request.post()
        by = str(form.get("by", "")).strip()
        if not by or len(by) > MAX_BY_CHARS:
            return web.Response(
                status=400,
                text=_page(f"<p>`by`: give your name (1 to {MAX_BY_CHARS} characters).</p>"),
                content_type="text/html",
            )
        ack = Ack.now(alert_id, by, via=f"link:{endpoint}")
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._on_ack, ack)
        except Exception:
            log.exception("ack server: cannot record the acknowledgement of %s", alert_id)
            return web.Response(
                status=503,
                text=_page("<p>Not recorded; try again in a moment.</p>"),
                content_type="text/html",
            )
        log.info("ack server: alert %s acknowledged by %s", alert_id, by)
        return web.Response(
            text=_page(
                f"<p>Alert {html.escape(alert_id)} acknowledged by {html.escape(by)} at "
                f"{format_ts(ack.at)}. It will not be escalated further.</p>"
            ),
            content_type="text/html",
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> AckServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="agentwatch-ack-server", daemon=True)
        self._thread.start()
        if not started.wait(_START_TIMEOUT_S):
            raise RuntimeError("ack server did not start")
        if failure:
            raise OSError(f"ack server cannot listen on {self._host}:{self._port}: {failure[0]}")
        log.info("ack server: listening on %s:%d", self._host, self.bound_port)
        return self

    async def _serve(self) -> None:
        from aiohttp import web  # noqa: PLC0415

        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
            address = runner.addresses[0]
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.bound_port = int(address[1])

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT_S)
        self._loop = self._thread = None
