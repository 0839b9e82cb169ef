"""OTLP ``gen_ai.evaluation.result`` span events -> ``score`` events, field by field."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from test_otlp_mapping import END_NS, SPAN, TRACE, anyvalue, make_span

from agentwatch.cli.otlp import genai_span
from agentwatch.producer.genai import Skipped, map_evaluations
from agentwatch.schemas import Event, EventKind

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.conversation.id": "conv-1", "gen_ai.agent.id": "concierge",
        "gen_ai.response.id": "resp-9"}


def _evaluation(attributes: dict[str, Any], time_ns: int = END_NS + 5_000_000) -> Span.Event:
    return Span.Event(name="gen_ai.evaluation.result", time_unix_nano=time_ns,
                      attributes=[KeyValue(key=k, value=anyvalue(v))
                                  for k, v in attributes.items()])


def test_an_evaluation_event_maps_to_a_score_of_the_span_it_is_on() -> None:
    span = make_span(CHAT, events=[_evaluation({
        "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.evaluation.score.label": "not_relevant",
        "gen_ai.evaluation.explanation": "answers another question"})])
    (score,) = map_evaluations(genai_span(span, {"agentwatch.tenant.id": "acme"}))
    assert not isinstance(score, Skipped)
    event = Event.model_validate_json(orjson.dumps(score))
    assert (event.kind, event.name, event.session_id, event.agent_id, event.tenant_id) == (
        EventKind.SCORE, "relevance", "conv-1", "concierge", "acme")
    assert (event.trace_id, event.parent_span_id, event.span_id) == (
        TRACE.hex(), SPAN.hex(), None)
    assert event.ts.isoformat() == "2026-11-30T10:00:01.255500+00:00"
    assert event.attributes == {
        "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.evaluation.score.label": "not_relevant",
        "gen_ai.evaluation.explanation": "answers another question",
        "gen_ai.response.id": "resp-9",  # the span's, as the event has none
    }


def test_each_evaluation_of_a_span_is_one_score_with_a_stable_id() -> None:
    evaluations = [_evaluation({"gen_ai.evaluation.name": n, "gen_ai.evaluation.score.value": 1})
                   for n in ("a", "b")]
    span = make_span(CHAT, events=evaluations)
    first = map_evaluations(genai_span(span, {}))
    assert first == map_evaluations(genai_span(span, {}))
    ids = [s["event_id"] for s in first if not isinstance(s, Skipped)]
    assert len(set(ids)) == 2


def test_an_evaluation_without_a_name_is_skipped_as_invalid() -> None:
    span = make_span(CHAT, events=[_evaluation({"gen_ai.evaluation.score.value": 1.0})])
    assert map_evaluations(genai_span(span, {})) == [
        Skipped("invalid", "gen_ai.evaluation.result without gen_ai.evaluation.name")]


def test_a_span_without_evaluations_makes_no_score() -> None:
    assert map_evaluations(genai_span(make_span(CHAT), {})) == []
