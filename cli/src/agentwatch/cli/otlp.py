"""``agentwatch otlp``: an OTLP/HTTP receiver that turns GenAI spans into events.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` as protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``: the protobuf JSON
mapping, trace and span ids as hex), optionally gzip-compressed (``Content-Encoding:
gzip``). Each span with ``gen_ai.*`` attributes becomes one event
(:mod:`agentwatch.producer.genai` has the table) handed to the project's producer, so
events are packed, spooled and delivered exactly as an agent's own would be.

Answers, as the OTLP/HTTP specification has them: 200 with an
``ExportTraceServiceResponse`` (its ``partial_success`` counts the spans that made no
event: without GenAI attributes, or invalid) in the request's encoding; 400 with a
``google.rpc.Status`` for a payload that cannot be decoded (bad protobuf, JSON or gzip);
413 past ``max_body_bytes`` (compressed or not); 415 for another content type; 503 with
``Retry-After`` when the producer's queue has no room for the request's events (the
exporter retries later instead of the events being dropped). Nothing a client sends
stops the server: every failure is counted in :class:`ReceiverStats`.

``gen_ai.evaluation.result`` span events (evaluation scores) become ``score`` events
(``map_evaluations``). ``POST /v1/logs`` takes an ``ExportLogsServiceRequest`` the same
ways: each log record named ``gen_ai.evaluation.result`` (its ``event_name``, or an
``event.name`` attribute) becomes a ``score`` event (``map_evaluation_record``: the same
mapping, the record's trace and span ids naming the scored operation); other records are
counted and skipped (``partial_success.rejected_log_records``). ``/v1/metrics`` is not
served.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

from agentwatch.cli._otlp_metrics import OtlpMetrics
from agentwatch.producer import Agentwatch, RateLimitedLog
from agentwatch.producer.genai import (
    EVALUATION_EVENT,
    GenAISpan,
    Skipped,
    map_evaluation_record,
    map_evaluations,
    map_span,
)
from agentwatch.schemas import ConfigError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_TENANT_HEADER",
    "OtlpError",
    "OtlpReceiver",
    "ReceiverStats",
    "decode_request",
    "genai_span",
    "run_receiver",
    "start",
]

DEFAULT_PORT: Final = 4318  # the OTLP/HTTP port
DEFAULT_TENANT_HEADER: Final = "X-Agentwatch-Tenant"
DEFAULT_MAX_BODY_BYTES: Final = 20 * 1024 * 1024  # the OpenTelemetry Collector's default
TRACES_PATH: Final = "/v1/traces"
LOGS_PATH: Final = "/v1/logs"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"

logger = logging.getLogger("agentwatch.otlp")

_INVALID_ARGUMENT: Final = 3  # google.rpc.Code
_RESOURCE_EXHAUSTED: Final = 8
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_RETRY_AFTER_S: Final = 1

_Request = TypeVar("_Request", bound=Message)


class OtlpError(Exception):
    """A request the receiver refuses: ``http_status`` and the counter ``reason``."""

    def __init__(self, http_status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class ReceiverStats:
    """Counters of a receiver (read them at any time; the event loop updates them).

    ``spans == events + skipped_not_genai + invalid_spans`` for the accepted requests;
    ``scores``: score events made of ``gen_ai.evaluation.result`` span events and log
    records, ``evaluations_skipped``: those that made none (no evaluation name, bad ids);
    ``log_records``: records of accepted ``/v1/logs`` requests, ``log_records_skipped``:
    those that are not evaluations.
    ``rejected_requests`` counts refused requests by reason: ``bad_protobuf``,
    ``bad_json``, ``bad_gzip``, ``unsupported_encoding``, ``unsupported_media_type``,
    ``too_large``, ``queue_full`` (answered 503), ``internal``.
    """

    requests: int = 0
    spans: int = 0
    events: int = 0
    skipped_not_genai: int = 0
    invalid_spans: int = 0
    evaluations_skipped: int = 0
    scores: int = 0
    log_records: int = 0
    log_records_skipped: int = 0
    rejected_requests: Counter[str] = field(default_factory=Counter)


def decode_request(
    request: _Request, body: bytes, content_type: str, content_encoding: str = "", *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> _Request:
    """``request`` (an empty OTLP export request) filled from ``body``; raises
    :class:`OtlpError` saying why it cannot be read."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        raise OtlpError(415, "unsupported_media_type",
                        f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}")
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, max_body_bytes)
    elif encoding not in ("", "identity"):
        raise OtlpError(400, "unsupported_encoding",
                        f"unsupported Content-Encoding {content_encoding!r}: use gzip or none")
    what = type(request).__name__
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError(400, "bad_protobuf", f"not an {what}: {exc}") from None
        return request
    try:
        document = _json_object(body)
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (orjson.JSONDecodeError, json_format.ParseError, TypeError, ValueError) as exc:
        raise OtlpError(400, "bad_json", f"not an OTLP/JSON {what}: {exc}") from None
    return request


def _json_object(body: bytes) -> dict[str, Any]:
    document = orjson.loads(body)
    if not isinstance(document, dict):
        raise TypeError(f"expected a JSON object, got {type(document).__name__}")
    return document


def _gunzip(body: bytes, max_body_bytes: int) -> bytes:
    """Every gzip member of ``body``, refusing more than ``max_body_bytes`` of output."""
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, max_body_bytes - size + 1)
            size += len(chunk)
            if size > max_body_bytes or inflater.unconsumed_tail:
                raise OtlpError(413, "too_large",
                                f"the payload inflates past {max_body_bytes} bytes")
            if not inflater.eof:
                raise OtlpError(400, "bad_gzip", "truncated gzip data")
            out.append(chunk)
            data = inflater.unused_data
            if not data:
                return b"".join(out)
    except zlib.error as exc:
        raise OtlpError(400, "bad_gzip", f"not gzip data: {exc}") from None


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex where the protobuf JSON mapping expects
    base64: rewrite those of spans and their links, in place (a value that is not hex is
    left to the protobuf parser, which takes base64)."""
    for resource_spans in _dicts(document.get("resourceSpans", document.get("resource_spans"))):
        for scope_spans in _dicts(
            resource_spans.get("scopeSpans", resource_spans.get("scope_spans"))
        ):
            for span in _dicts(scope_spans.get("spans")):
                _rewrite_ids(span)
                for link in _dicts(span.get("links")):
                    _rewrite_ids(link)
    for resource_logs in _dicts(document.get("resourceLogs", document.get("resource_logs"))):
        for scope_logs in _dicts(resource_logs.get("scopeLogs", resource_logs.get("scope_logs"))):
            for record in _dicts(scope_logs.get("logRecords", scope_logs.get("log_records"))):
                _rewrite_ids(record)


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _rewrite_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value and len(value) % 2 == 0:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                continue  # not hex: maybe base64, the protobuf parser decides
            obj[key] = base64.b64encode(raw).decode("ascii")


# -- protobuf -> GenAISpan ---------------------------------------------------------------

def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return binascii.hexlify(value.bytes_value).decode("ascii")
    # string_value, bool_value, int_value, double_value (None: an empty AnyValue)
    return None if which is None else getattr(value, which)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        which = value.WhichOneof("value")
        # the common scalars inline (this runs for every attribute of every span)
        if which == "string_value":
            out[pair.key] = value.string_value
        elif which == "int_value":
            out[pair.key] = value.int_value
        else:
            out[pair.key] = _value(value)
    return out


def genai_span(span: Span, resource: Mapping[str, Any]) -> GenAISpan:
    """What the mapping reads from one OTLP span (``resource``: its decoded attributes)."""
    exception_type: str | None = None
    for event in span.events:
        if event.name == "exception":
            for pair in event.attributes:
                if pair.key == "exception.type" and pair.value.HasField("string_value"):
                    exception_type = pair.value.string_value
            break
    evaluations = tuple((e.time_unix_nano, _attributes(e.attributes))
                        for e in span.events if e.name == EVALUATION_EVENT)
    return GenAISpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        is_error=span.status.code == SpanStatus.STATUS_CODE_ERROR,
        status_message=span.status.message,
        attributes=_attributes(span.attributes),
        resource=resource,
        exception_type=exception_type,
        evaluations=evaluations,
    )


# -- the receiver ------------------------------------------------------------------------

class OtlpReceiver:
    """The ``/v1/traces`` handler in front of one producer client (not owned: the caller
    closes it). ``tenant_header`` names the request header that sets the tenant."""

    def __init__(
        self,
        client: Agentwatch,
        *,
        tenant_header: str = DEFAULT_TENANT_HEADER,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self.client = client
        self.tenant_header = tenant_header
        self.max_body_bytes = max_body_bytes
        self.stats = ReceiverStats()
        self.metrics = OtlpMetrics(self)
        self._log = RateLimitedLog(log=logger)  # one line per reason per 10 s

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post(TRACES_PATH, self.handle_traces)
        app.router.add_post(LOGS_PATH, self.handle_logs)
        self.metrics.add_routes(app)  # /metrics, /healthz, /readyz
        return app

    async def handle_traces(self, request: web.Request) -> web.Response:
        return await self._handle(request, ExportTraceServiceRequest(), self._export)

    async def handle_logs(self, request: web.Request) -> web.Response:
        return await self._handle(request, ExportLogsServiceRequest(), self._export_logs)

    async def _handle(
        self, request: web.Request, message: _Request,
        export: Callable[[_Request, str | None], Message],
    ) -> web.Response:
        """Read the body into ``message`` (an empty export request), hand it to ``export``
        (map and send), answer as OTLP does."""
        self.stats.requests += 1
        json_reply = request.content_type == JSON
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise OtlpError(413, "too_large",
                                f"the payload is larger than {self.max_body_bytes} bytes"
                                ) from None
            decoded = decode_request(
                message, body, request.headers.get("Content-Type", ""),
                request.headers.get("Content-Encoding", ""), max_body_bytes=self.max_body_bytes)
            response = export(decoded, request.headers.get(self.tenant_header) or None)
        except OtlpError as exc:
            self.stats.rejected_requests[exc.reason] += 1
            self._log.warn_limited(exc.reason, "agentwatch otlp: %s request refused (%d): %s",
                                   exc.reason, exc.http_status, exc.message)
            code = _RESOURCE_EXHAUSTED if exc.http_status == 503 else _INVALID_ARGUMENT
            headers = {"Retry-After": str(_RETRY_AFTER_S)} if exc.http_status == 503 else None
            return _reply(Status(code=code, message=exc.message), json_reply,
                          status=exc.http_status, headers=headers)
        except Exception as exc:  # a bug here must not stop the server: answer 500, count
            self.stats.rejected_requests["internal"] += 1
            logger.exception("otlp: internal error handling a request")
            return _reply(Status(code=13, message=f"internal error: {exc!r}"), json_reply,
                          status=500)
        return _reply(response, json_reply)

    def _export(
        self, export: ExportTraceServiceRequest, tenant_id: str | None
    ) -> ExportTraceServiceResponse:
        events: list[dict[str, Any]] = []
        scores: list[dict[str, Any]] = []
        not_genai = evaluations = 0
        invalid: list[str] = []
        spans = 0
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans += 1
                    genai = genai_span(span, resource)
                    mapped = map_span(genai, tenant_id=tenant_id)
                    if not isinstance(mapped, Skipped):
                        events.append(mapped)
                    elif mapped.reason == "not_genai":
                        not_genai += 1
                    else:
                        invalid.append(mapped.detail)
                    for score in map_evaluations(genai, tenant_id=tenant_id):
                        if isinstance(score, Skipped):
                            evaluations += 1
                        else:
                            scores.append(score)
        self._emit_all([*events, *scores])
        stats = self.stats
        stats.spans += spans
        stats.events += len(events)
        stats.skipped_not_genai += not_genai
        stats.invalid_spans += len(invalid)
        stats.evaluations_skipped += evaluations
        stats.scores += len(scores)
        if invalid:
            self._log.warn_limited("invalid", "agentwatch otlp: %d invalid GenAI spans not "
                                   "sent (first: %s)", len(invalid), invalid[0])
        response = ExportTraceServiceResponse()
        if not_genai or invalid:
            parts = []
            if not_genai:
                parts.append(f"{not_genai} spans without gen_ai.* attributes skipped")
            if invalid:
                parts.append(f"{len(invalid)} invalid GenAI spans (first: {invalid[0]})")
            response.partial_success.rejected_spans = not_genai + len(invalid)
            response.partial_success.error_message = "; ".join(parts)
        return response

    def _export_logs(
        self, export: ExportLogsServiceRequest, tenant_id: str | None
    ) -> ExportLogsServiceResponse:
        scores: list[dict[str, Any]] = []
        records = skipped = invalid = 0
        first_invalid = ""
        for resource_logs in export.resource_logs:
            resource = _attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    records += 1
                    attributes = _attributes(record.attributes)
                    if _record_name(record, attributes) != EVALUATION_EVENT:
                        skipped += 1
                        continue
                    score = map_evaluation_record(
                        trace_id=record.trace_id.hex(), span_id=record.span_id.hex(),
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        attributes=attributes, resource=resource, tenant_id=tenant_id)
                    if isinstance(score, Skipped):
                        invalid += 1
                        first_invalid = first_invalid or score.detail
                    else:
                        scores.append(score)
        self._emit_all(scores)
        stats = self.stats
        stats.log_records += records
        stats.log_records_skipped += skipped
        stats.evaluations_skipped += invalid
        stats.scores += len(scores)
        if invalid:
            self._log.warn_limited("invalid_evaluation", "agentwatch otlp: %d invalid "
                                   "evaluation records not sent (first: %s)", invalid,
                                   first_invalid)
        response = ExportLogsServiceResponse()
        if skipped or invalid:
            parts = []
            if skipped:
                parts.append(f"{skipped} log records that are not {EVALUATION_EVENT} skipped")
            if invalid:
                parts.append(f"{invalid} invalid evaluation records (first: {first_invalid})")
            response.partial_success.rejected_log_records = skipped + invalid
            response.partial_success.error_message = "; ".join(parts)
        return response

    def _emit_all(self, events: list[dict[str, Any]]) -> None:
        """Hand all of a request's events to the producer, or none: OtlpError 503 when its
        queue has no room for them (the exporter retries later instead of losing them)."""
        room = max(0, self.client.settings.queue_size - self.client.stats.queue_depth)
        if len(events) > room:
            raise OtlpError(503, "queue_full", f"the producer's queue has room for {room} "
                            f"events, not {len(events)}: retry later")
        for event in events:
            self.client.emit(event)


def _record_name(record: LogRecord, attributes: Mapping[str, Any]) -> str:
    """A log record's event name: ``event_name`` (OTLP 1.5+), else the ``event.name``
    attribute older SDKs set."""
    name = attributes.get("event.name")
    return record.event_name or (name if isinstance(name, str) else "")


def _reply(
    message: Message, json_reply: bool, *, status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    if json_reply:
        body = json_format.MessageToJson(message, indent=None).encode()
        return web.Response(body=body, status=status, content_type=JSON, headers=headers)
    return web.Response(body=message.SerializeToString(), status=status, content_type=PROTOBUF,
                        headers=headers)


# -- running it --------------------------------------------------------------------------

async def start(receiver: OtlpReceiver, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``receiver`` on ``host:port`` (port 0: a free one); returns the
    runner (``await runner.cleanup()`` stops it) and the port bound."""
    # auto_decompress off: the receiver inflates gzip itself, with its size limit
    runner = web.AppRunner(receiver.app(), access_log=None, handle_signals=False,
                           auto_decompress=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        address = runner.addresses[0]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(address[1])


def run_receiver(receiver: OtlpReceiver, host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM, then close the producer (sending what it holds)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            runner, bound = await start(receiver, host, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        logger.info("agentwatch otlp: listening on http://%s:%d%s", host, bound, TRACES_PATH)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        receiver.client.close()
        s = receiver.stats
        logger.info(
            "agentwatch otlp: %d requests, %d spans -> %d events; skipped %d without "
            "gen_ai.* attributes, %d invalid; %d evaluation events -> %d scores; refused "
            "requests: %s",
            s.requests, s.spans, s.events, s.skipped_not_genai, s.invalid_spans,
            s.scores + s.evaluations_skipped, s.scores, dict(s.rejected_requests) or "none")
    return 0
