"""The evaluation-score views on chDB: one row per score, and scores next to costs per
session and per agent-hour, checked by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentwatch.schemas import Event, EventKind
from agentwatch.sinks import ChdbBackend, ClickHouseSink, SchemaConfig, migrate

H = datetime(2026, 11, 20, 9, tzinfo=UTC)
VALUE = "gen_ai.evaluation.score.value"


@pytest.fixture
def database(backend: ChdbBackend) -> Iterator[str]:
    name = f"aw_scores_{uuid.uuid4().hex[:12]}"
    migrate(backend, SchemaConfig(database=name, ttl_days=None))
    yield name
    backend.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def _event(minute: int, kind: EventKind, session: str = "s-1", agent: str = "agent-a",
           **fields: Any) -> Event:
    return Event(event_id=str(uuid.uuid4()), ts=H + timedelta(minutes=minute), kind=kind,
                 agent_id=agent, session_id=session, **fields)


def _score(minute: int, value: float | None, session: str = "s-1", **attrs: Any) -> Event:
    attributes = {"agentwatch.evaluation.source": "llm_judge", **attrs}
    if value is not None:
        attributes[VALUE] = value
    return _event(minute, EventKind.SCORE, session, name="helpfulness",
                  attributes=attributes)


@pytest.fixture
def written(backend: ChdbBackend, database: str) -> str:
    events = [
        _event(0, EventKind.LLM_CALL, cost_usd=0.25),
        _event(1, EventKind.LLM_CALL, cost_usd=0.5),
        _score(2, 0.2, **{"gen_ai.evaluation.score.label": "poor",
                          "gen_ai.response.id": "resp-1"}),
        _score(3, 0.6),
        _score(4, None, **{"gen_ai.evaluation.score.label": "good"}),
        _event(5, EventKind.LLM_CALL, "s-2", cost_usd=1.0),
        _score(61, 1.0, "s-2"),
    ]
    sink = ClickHouseSink(backend, database=database)
    sink.add_events(events)
    prefix = "scores"
    assert sink.flush(dedup_token_prefix=prefix).inserted.events == len(events)
    return database


def test_scores_has_one_row_per_score_with_the_otel_fields(backend: ChdbBackend,
                                                           written: str) -> None:
    rows = backend.query(
        f"SELECT evaluation, value, label, source, response_id FROM {written}.scores "
        "ORDER BY ts").rows
    assert rows == [
        ("helpfulness", 0.2, "poor", "llm_judge", "resp-1"),
        ("helpfulness", 0.6, None, "llm_judge", None),
        ("helpfulness", None, "good", "llm_judge", None),
        ("helpfulness", 1.0, None, "llm_judge", None),
    ]


def test_scores_per_session_puts_the_sessions_cost_next_to_its_scores(
        backend: ChdbBackend, written: str) -> None:
    rows = backend.query(
        f"SELECT session_id, scores, round(mean_value, 6), min_value, llm_calls, cost_usd "
        f"FROM {written}.scores_per_session ORDER BY session_id").rows
    assert rows == [("s-1", 3, 0.4, 0.2, 2, 0.75), ("s-2", 1, 1.0, 1.0, 1, 1.0)]


def test_scores_per_agent_hourly_puts_the_hours_cost_next_to_its_scores(
        backend: ChdbBackend, written: str) -> None:
    rows = backend.query(
        f"SELECT hour, scores, round(mean_value, 6), cost_usd "
        f"FROM {written}.scores_per_agent_hourly ORDER BY hour").rows
    assert rows == [(H, 3, 0.4, 1.75), (H + timedelta(hours=1), 1, 1.0, 0.0)]
