"""Config of the budget, latency and score rules: defaults, and errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.processors.core import rules_from_mapping
from agentwatch.processors.core._rules import BudgetRule, LatencyRule, ScoreRule
from agentwatch.schemas import AlertScope, ConfigError


def _rule(name: str, settings: dict[str, Any]) -> Any:
    return rules_from_mapping({"rules": {name: settings}}).rules[name]


def test_none_of_them_is_on_by_default() -> None:
    types = {rule.type for rule in rules_from_mapping({}).rules.values()}
    assert not types & {"budget", "latency", "score"}


def test_budget_defaults() -> None:
    rule = _rule("spend", {"type": "budget", "amount_usd": 500})
    assert isinstance(rule, BudgetRule)
    assert (rule.scope, rule.period, rule.timezone, rule.fractions, rule.forecast_window_s) == (
        AlertScope.TENANT, "month", "UTC", (0.5, 0.8, 1.0), 3600)


def test_latency_and_score_defaults() -> None:
    latency = _rule("slow", {"type": "latency"})
    assert isinstance(latency, LatencyRule)
    assert (latency.scope, latency.window_s, latency.quantile, latency.threshold_ms,
            latency.min_samples) == (AlertScope.AGENT, 300, 0.95, 10_000.0, 20)
    score = _rule("quality", {"type": "score", "evaluation": "relevance", "threshold": 0.7})
    assert isinstance(score, ScoreRule)
    assert (score.scope, score.window_s, score.min_samples, score.floor) == (
        AlertScope.AGENT, 3600, 10, None)


@pytest.mark.parametrize(("settings", "message"), [
    ({"type": "budget"}, "`rules.spend.amount_usd`: Field required"),
    ({"type": "budget", "amount_usd": -1}, "`rules.spend.amount_usd`: Input should be greater"),
    ({"type": "budget", "amount_usd": 5, "period": "year"}, "`rules.spend.period`"),
    ({"type": "budget", "amount_usd": 5, "timezone": "Mars/Olympus"},
     "rules.spend.timezone: unknown time zone 'Mars/Olympus'"),
    ({"type": "budget", "amount_usd": 5, "fractions": [0.8, 0.5]},
     "rules.spend.fractions: must be distinct and ascending"),
    ({"type": "budget", "amount_usd": 5, "scope": "session"}, "`rules.spend.scope`"),
    ({"type": "budget", "amount_usd": 5, "forecast_window_s": 10},
     "`rules.spend.forecast_window_s`: Input should be greater than or equal to 60"),
    ({"type": "budget", "amount_usd": 5, "amount": 5},
     "`rules.spend.amount`: unknown key (did you mean amount_usd?)"),
    ({"type": "latency", "quantile": 1.5}, "`rules.spend.quantile`"),
    ({"type": "latency", "threshold_ms": 0}, "`rules.spend.threshold_ms`"),
    ({"type": "latency", "window_s": 5}, "rules.spend.window_s: the window (5 s) must be longer"),
    ({"type": "score", "threshold": 0.5}, "`rules.spend.evaluation`: Field required"),
    ({"type": "score", "evaluation": "x", "threshold": 2, "floor": 3},
     "rules.spend.threshold: with a floor it is a share in (0, 1], got 2"),
    ({"type": "score", "evaluation": "x", "threshold": 0.5, "resolve_at": 0.4},
     "rules.spend.resolve_at: must be at or above threshold (0.5), got 0.4"),
    ({"type": "score", "evaluation": "x", "threshold": 0.5, "floor": 3, "resolve_at": 0.6},
     "rules.spend.resolve_at: must be below threshold (0.5), got 0.6"),
    ({"type": "scores"}, "`rules.spend`: Input tag 'scores' found using 'type' does not match"),
])
def test_errors_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        rules_from_mapping({"rules": {"spend": settings}})
    assert message in str(info.value)
