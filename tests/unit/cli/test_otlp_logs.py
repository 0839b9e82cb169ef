"""``POST /v1/logs``: ``gen_ai.evaluation.result`` log records -> ``score`` events, from a
real OpenTelemetry SDK's OTLP log exporter and from hand-built OTLP/JSON payloads; other
records are counted and skipped; a bad payload gets OTLP's error status."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from test_otlp_receiver import SAFETY_TIMEOUT_S, Served, serve_in_thread

from agentwatch.producer.genai import Skipped, map_evaluation_record
from agentwatch.producer.testing import collector
from agentwatch.schemas import EventKind

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
T_NS = 1_796_032_800_250_000_000  # 2026-11-30T10:00:00.25Z


@pytest.fixture
def logs() -> Iterator[Served]:
    for served in serve_in_thread(collector(agent_id="fallback-agent", linger_ms=5)):
        served.url = served.url.replace("/v1/traces", "/v1/logs")
        yield served


def test_sdk_exported_evaluation_records_become_scores_of_the_scored_span(
    logs: Served,
) -> None:
    tracer_provider = TracerProvider()
    tracer = tracer_provider.get_tracer("test.judge")
    provider = LoggerProvider(resource=Resource.create(
        {"service.name": "judge", "agentwatch.tenant.id": "acme"}))
    exporter = OTLPLogExporter(endpoint=logs.url, timeout=SAFETY_TIMEOUT_S)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("test.judge")
    with tracer.start_as_current_span("chat gpt-4o") as scored:
        logger.emit(event_name="gen_ai.evaluation.result", attributes={
            "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.25,
            "gen_ai.evaluation.score.label": "not_relevant",
            "gen_ai.conversation.id": "conv-9", "gen_ai.agent.id": "concierge"})
        logger.emit(body="an ordinary log line", attributes={"http.route": "/chat"})
    provider.shutdown()
    tracer_provider.shutdown()

    [score] = logs.events()
    ctx = scored.get_span_context()
    assert (score.kind, score.name, score.session_id, score.agent_id, score.tenant_id) == (
        EventKind.SCORE, "relevance", "conv-9", "concierge", "acme")
    assert (score.trace_id, score.parent_span_id) == (
        f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert score.attributes == {"gen_ai.evaluation.score.value": 0.25,
                                "gen_ai.evaluation.score.label": "not_relevant"}
    stats = logs.receiver.stats
    assert (stats.log_records, stats.log_records_skipped, stats.scores) == (2, 1, 1)


def _record(**fields: object) -> dict[str, object]:
    return {"timeUnixNano": str(T_NS), **fields}


def _attrs(**values: object) -> list[dict[str, object]]:
    def value(v: object) -> dict[str, object]:
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": str(v)}
    return [{"key": k.replace("__", "."), "value": value(v)} for k, v in values.items()]


def _payload(*records: dict[str, object]) -> bytes:
    return orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": _attrs(service__name="judge")},
        "scopeLogs": [{"logRecords": list(records)}]}]})


def test_otlp_json_records_map_by_event_name_or_attribute_and_twice_is_one_event(
    logs: Served,
) -> None:
    by_field = _record(eventName="gen_ai.evaluation.result", traceId=TRACE_HEX, spanId=SPAN_HEX,
                       attributes=_attrs(gen_ai__evaluation__name="toxicity",
                                         gen_ai__evaluation__score__value=0.0))
    by_attribute = _record(attributes=_attrs(  # an older SDK: no event_name field
        event__name="gen_ai.evaluation.result", gen_ai__evaluation__name="faithfulness",
        gen_ai__conversation__id="conv-3", gen_ai__evaluation__score__value=0.5))
    body = gzip.compress(_payload(by_field, by_attribute, by_field))
    status, _, raw = logs.post(body, "application/json", **{"Content-Encoding": "gzip"})
    assert status == 200
    assert orjson.loads(raw) == {}  # a full success: nothing rejected

    events = logs.events()
    assert len(events) == 3
    toxicity = [e for e in events if e.name == "toxicity"]
    assert len({e.event_id for e in toxicity}) == 1  # the same record twice: one event id
    [faithfulness] = [e for e in events if e.name == "faithfulness"]
    assert (faithfulness.session_id, faithfulness.trace_id, faithfulness.parent_span_id) == (
        "conv-3", None, None)
    assert faithfulness.ts == datetime(2026, 11, 30, 10, 0, 0, 250_000, tzinfo=UTC)
    assert (toxicity[0].session_id, toxicity[0].trace_id, toxicity[0].parent_span_id) == (
        TRACE_HEX, TRACE_HEX, SPAN_HEX)  # no conversation id: the trace is the session


def test_records_that_make_no_score_are_counted_in_partial_success(logs: Served) -> None:
    nameless = _record(eventName="gen_ai.evaluation.result", traceId=TRACE_HEX,
                       attributes=_attrs(gen_ai__evaluation__score__value=1.0))
    unplaced = _record(eventName="gen_ai.evaluation.result",
                       attributes=_attrs(gen_ai__evaluation__name="relevance"))
    plain = _record(body={"stringValue": "hello"})
    status, _, raw = logs.post(_payload(nameless, unplaced, plain), "application/json")
    assert status == 200
    response = json_format.Parse(raw, ExportLogsServiceResponse())
    assert response.partial_success.rejected_log_records == 3
    message = response.partial_success.error_message
    assert "1 log records that are not gen_ai.evaluation.result skipped" in message
    assert "2 invalid evaluation records (first: gen_ai.evaluation.result without " \
           "gen_ai.evaluation.name)" in message
    assert logs.events() == []
    stats = logs.receiver.stats
    assert (stats.log_records, stats.log_records_skipped, stats.evaluations_skipped) == (3, 1, 2)


def test_a_bad_logs_payload_gets_an_error_status_and_the_server_keeps_serving(
    logs: Served,
) -> None:
    status, _, raw = logs.post(b"\xff\xff not protobuf")
    assert status == 400
    assert "not an ExportLogsServiceRequest" in Status.FromString(raw).message
    status, _, _ = logs.post(b"[1, 2]", "application/json")
    assert status == 400
    assert logs.receiver.stats.rejected_requests == {"bad_protobuf": 1, "bad_json": 1}
    ok = _record(eventName="gen_ai.evaluation.result", traceId=TRACE_HEX, spanId=SPAN_HEX,
                 attributes=_attrs(gen_ai__evaluation__name="relevance"))
    assert logs.post(_payload(ok), "application/json")[0] == 200
    assert [e.name for e in logs.events()] == ["relevance"]


def test_an_evaluation_record_naming_no_session_is_invalid_with_the_reason() -> None:
    assert map_evaluation_record(
        trace_id="", span_id="", time_ns=T_NS, resource={},
        attributes={"gen_ai.evaluation.name": "relevance"},
    ) == Skipped("invalid", "neither gen_ai.conversation.id nor a trace id names the session")
