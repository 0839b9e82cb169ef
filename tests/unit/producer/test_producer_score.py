"""``aw.score(...)``: one ``score`` event named after OpenTelemetry's
``gen_ai.evaluation.result``; bad arguments are counted, never raised."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.producer.testing import Collector
from agentwatch.schemas import EventKind


def test_score_emits_a_score_event_with_the_otel_attribute_names(aw: Collector) -> None:
    aw.score("helpfulness", 0.25, label="poor", explanation="missed the question",
             source="human", response_id="resp-7", span_id="span-3")
    (event,) = aw.events
    assert (event.kind, event.name, event.parent_span_id) == (
        EventKind.SCORE, "helpfulness", "span-3")
    assert event.session_id == aw.default_session_id
    assert event.attributes == {
        "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.evaluation.score.label": "poor",
        "gen_ai.evaluation.explanation": "missed the question",
        "gen_ai.response.id": "resp-7",
        "agentwatch.evaluation.source": "human",
    }


def test_a_label_alone_and_an_int_value_are_scores(aw: Collector) -> None:
    aw.score("relevance", label="relevant")
    aw.score("stars", 4, session_id="other")
    first, second = aw.events
    assert first.attributes == {"gen_ai.evaluation.score.label": "relevant",
                                "agentwatch.evaluation.source": "llm_judge"}
    assert second.attributes is not None
    assert second.attributes["gen_ai.evaluation.score.value"] == 4.0
    assert second.session_id == "other"


@pytest.mark.parametrize(("args", "kwargs"), [
    (("", 0.5), {}),
    (("x",), {}),
    (("x", "high"), {}),
    (("x", True), {}),
    (("x", float("nan")), {}),
    (("x", 0.5), {"source": "crowd"}),
    (("x",), {"label": 3}),
])
def test_bad_arguments_are_counted_not_raised(aw: Collector, args: tuple[Any, ...],
                                              kwargs: dict[str, Any]) -> None:
    aw.score(*args, **kwargs)
    assert aw.events == []
    assert aw.stats.invalid == 1
