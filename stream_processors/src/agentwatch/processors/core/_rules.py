"""Alert rules: the defaults of DESIGN.md and one YAML/TOML file to change them.

A rules file looks like this (every key optional; unknown keys are errors)::

    disorder_s: 5                 # accepted event-time disorder per key
    step_ms: 1000                 # window granularity (windows slide in these steps)
    session_idle_timeout_s: 1800  # session state expires after this much event time
    pack_idle_sessions_s: 60      # a session this long without events is kept packed
    rules:
      session_cost:               # a default rule: only the keys you give change
        threshold_usd: 2.5
      agent_error_rate:
        enabled: false
      tenant_cost:                # a new rule needs a type
        type: cost
        scope: tenant
        window_s: 3600
        threshold_usd: 200
        resolve_below_usd: 150    # hysteresis: firing until the cost is under $150
        resolve_after_s: 600      # ... or has stayed at or under $200 for 10 minutes
        action: halt              # notify (default) or halt: stop the tenant's agents

Halt rules (``action: halt``). While such an alert fires, its scope is halted: the worker
and the embedded pipeline write a halt record to the control topic and the resume record
when it resolves (``agentwatch.schemas.ControlRecord``). By default only the
same-arguments loop (``loop_repeat``) halts: it is the one rule whose firing says the
session will not recover by itself. A budget rule's 100 % crossing is the other natural
candidate (``action: halt`` on it); cost and error-rate rules notify unless told.

Errors name the bad key: ``rules.session_cost.threshold_usd: Input should be
greater than 0 (got -1)``.

Hysteresis (cost and error-rate rules). A firing alert resolves at the first event time
``t`` at which either

* the value is below ``resolve_below_usd`` / ``resolve_below_ratio`` (an empty window
  always counts as below), or
* ``resolve_after_s`` is set and the value has been below the *threshold* (cost <=
  ``threshold_usd``; error share < ``threshold_ratio``) continuously since ``t -
  resolve_after_s``.

The defaults: ``resolve_below_*`` = 0.8 x the threshold (:data:`RESOLVE_BELOW_FACTOR`), and
``resolve_after_s`` off (None). Why 0.8: a rate hovering at the threshold (24-26 % around
25 %) crosses it back and forth with every few calls; the value must move a fifth of the
threshold away before the episode counts as over, which a real recovery does and noise at
the threshold does not. ``resolve_after_s`` is for rules where that margin is never
reached by a slow recovery; ``resolve_after_s: 0`` resolves as soon as the value is below
the threshold, i.e. no hysteresis (the behaviour before these settings).
"""

from __future__ import annotations

import difflib
import re
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from agentwatch.schemas import AlertScope, AlertType, ConfigError, EventKind, Severity
from agentwatch.schemas.config_files import read_config_file

__all__ = [
    "DEFAULT_RULES",
    "RESOLVE_BELOW_FACTOR",
    "SCORE_VALUE_KEY",
    "BudgetRule",
    "CostRule",
    "ErrorRateRule",
    "GuardrailRule",
    "LatencyRule",
    "LoopCycleRule",
    "LoopRepeatRule",
    "LoopStepsRule",
    "Rule",
    "RulesConfig",
    "ScoreRule",
    "ToolPolicy",
    "ToolPolicyRule",
    "load_rules",
    "rules_from_mapping",
    "zone_info",
]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]

#: ``resolve_below_*`` when not given: this fraction of the threshold (see the module doc)
RESOLVE_BELOW_FACTOR: Final = 0.8


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: Severity = Severity.WARNING
    cooldown_s: Annotated[int, Field(ge=0)] = 0
    """After a resolution, the same rule and key may not fire again for this long."""
    action: Literal["notify", "halt"] = "notify"
    """``halt``: while the alert fires, its scope (session, agent or tenant) is halted on
    the control topic, and producers with ``control=True`` raise ``AgentHalted``."""

    @property
    def alert_type(self) -> AlertType:
        raise NotImplementedError

    @property
    def window_s_or_none(self) -> int | None:
        return getattr(self, "window_s", None)


class CostRule(_RuleBase):
    """Fires when the cost in the sliding window exceeds ``threshold_usd``."""

    type: Literal["cost"] = "cost"
    scope: AlertScope = AlertScope.SESSION
    window_s: PositiveInt = 60
    threshold_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    resolve_below_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """A firing alert resolves once the cost is below this (None: 0.8 x threshold_usd)."""
    resolve_after_s: NonNegativeInt | None = None
    """... or once the cost has been <= threshold_usd for this long (None: off)."""

    @property
    def alert_type(self) -> AlertType:
        return AlertType.COST

    @property
    def resolve_below(self) -> float:
        """``resolve_below_usd`` or its default."""
        if self.resolve_below_usd is None:
            return RESOLVE_BELOW_FACTOR * self.threshold_usd
        return self.resolve_below_usd

    def hysteresis_error(self) -> str | None:
        if self.resolve_below_usd is not None and self.resolve_below_usd >= self.threshold_usd:
            return (f"resolve_below_usd: must be below threshold_usd ({self.threshold_usd}), "
                    f"got {self.resolve_below_usd}")
        return None


class ErrorRateRule(_RuleBase):
    """Fires when at least ``min_events`` of ``kinds`` are in the window and the share with
    status=error is >= ``threshold_ratio``; resolves when the share falls below
    ``resolve_below_ratio`` (or the window empties), or has stayed below ``threshold_ratio``
    for ``resolve_after_s``."""

    type: Literal["error_rate"] = "error_rate"
    scope: AlertScope = AlertScope.AGENT
    window_s: PositiveInt = 300
    min_events: PositiveInt = 20
    threshold_ratio: Annotated[float, Field(gt=0, le=1)] = 0.25
    kinds: frozenset[EventKind] = frozenset({EventKind.LLM_CALL, EventKind.TOOL_CALL})
    resolve_below_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    """A firing alert resolves once the share is below this (None: 0.8 x threshold_ratio)."""
    resolve_after_s: NonNegativeInt | None = None
    """... or once the share has been < threshold_ratio for this long (None: off)."""

    @property
    def alert_type(self) -> AlertType:
        return AlertType.ERROR_RATE

    @property
    def resolve_below(self) -> float:
        """``resolve_below_ratio`` or its default."""
        if self.resolve_below_ratio is None:
            return RESOLVE_BELOW_FACTOR * self.threshold_ratio
        return self.resolve_below_ratio

    def hysteresis_error(self) -> str | None:
        below = self.resolve_below_ratio
        if below is not None and below >= self.threshold_ratio:
            return (f"resolve_below_ratio: must be below threshold_ratio "
                    f"({self.threshold_ratio}), got {below}")
        return None


class LoopRepeatRule(_RuleBase):
    """Fires when one tool is called with the same ``tool_args_hash`` at least
    ``min_repeats`` times in the window (this also catches A->B->A->B cycles with fixed
    arguments); resolves when no tool+arguments pair is at that count any more."""

    type: Literal["loop_repeat"] = "loop_repeat"
    scope: Literal[AlertScope.SESSION, AlertScope.AGENT] = AlertScope.SESSION
    window_s: PositiveInt = 120
    min_repeats: Annotated[int, Field(ge=2)] = 5
    severity: Severity = Severity.CRITICAL
    action: Literal["notify", "halt"] = "halt"

    @property
    def alert_type(self) -> AlertType:
        return AlertType.RUNAWAY_LOOP


class LoopStepsRule(_RuleBase):
    """Fires when a session has more than ``max_steps`` events of ``kinds`` in total;
    resolves when the session ends or expires."""

    type: Literal["loop_steps"] = "loop_steps"
    scope: Literal[AlertScope.SESSION] = AlertScope.SESSION
    max_steps: PositiveInt = 200
    kinds: frozenset[EventKind] = frozenset({EventKind.LLM_CALL, EventKind.TOOL_CALL})

    @property
    def alert_type(self) -> AlertType:
        return AlertType.RUNAWAY_LOOP


# -- issue 17, part B: budgets over calendar periods, latency quantiles, evaluation scores --
#: the score event's attribute keys (OpenTelemetry's ``gen_ai.evaluation.result`` event)
SCORE_VALUE_KEY: Final = "gen_ai.evaluation.score.value"


class BudgetRule(_RuleBase):
    """Spend of a tenant or an agent over a calendar ``period`` (in ``timezone``) against
    ``amount_usd``: fires once per period at each of ``fractions`` of it, and once when, at
    the burn rate of the last ``forecast_window_s``, the budget runs out before the period
    ends. Every alert of a period resolves when the period rolls over."""

    type: Literal["budget"] = "budget"
    scope: Literal[AlertScope.TENANT, AlertScope.AGENT] = AlertScope.TENANT
    amount_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    period: Literal["day", "week", "month"] = "month"
    timezone: str = "UTC"
    """An IANA time zone name (Europe/Paris): where the day, week (Monday) or month starts."""
    fractions: tuple[Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)], ...] = (
        0.5, 0.8, 1.0)
    forecast_window_s: Annotated[int, Field(ge=60)] | None = 3600
    """The burn rate is the spend of this much event time (None: no forecast alert)."""

    @property
    def alert_type(self) -> AlertType:
        return AlertType.BUDGET

    @model_validator(mode="after")
    def _check(self) -> BudgetRule:
        if list(self.fractions) != sorted(set(self.fractions)):
            raise ValueError(f"fractions: must be distinct and ascending, got "
                             f"{list(self.fractions)}")
        try:
            zone_info(self.timezone)
        except ValueError as exc:
            raise ValueError(f"timezone: {exc}") from None
        return self


class LatencyRule(_RuleBase):
    """The ``quantile`` (p95 by default) of ``duration_ms`` of ``kinds`` per agent over the
    window is above ``threshold_ms`` (with at least ``min_samples``); resolves when the
    samples over the threshold are fewer than ``resolve_tail_factor`` x the tail the
    quantile allows (p96 <= threshold for p95 with the default 0.8), or after
    ``resolve_after_s`` under the threshold."""

    type: Literal["latency"] = "latency"
    scope: Literal[AlertScope.AGENT] = AlertScope.AGENT
    window_s: PositiveInt = 300
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.95
    threshold_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10_000.0
    min_samples: PositiveInt = 20
    kinds: frozenset[EventKind] = frozenset({EventKind.LLM_CALL})
    model: str | None = None
    """Only events of this model (None: every model of the agent)."""
    resolve_tail_factor: Annotated[float, Field(ge=0, lt=1)] = RESOLVE_BELOW_FACTOR
    resolve_after_s: NonNegativeInt | None = None

    @property
    def alert_type(self) -> AlertType:
        return AlertType.LATENCY


class ScoreRule(_RuleBase):
    """Evaluation scores named ``evaluation`` per agent over the window: with ``floor``
    unset, fires when their mean is below ``threshold``; with ``floor`` set, when the share
    of scores below ``floor`` is at least ``threshold`` (a ratio). At least ``min_samples``
    scores. Resolves when the mean is at or above ``resolve_at`` (default: threshold) /
    the share under ``resolve_at`` (default 0.8 x threshold), or the window empties."""

    type: Literal["score"] = "score"
    scope: Literal[AlertScope.AGENT] = AlertScope.AGENT
    evaluation: Annotated[str, Field(min_length=1)]
    window_s: PositiveInt = 3600
    threshold: Annotated[float, Field(allow_inf_nan=False)]
    floor: Annotated[float, Field(allow_inf_nan=False)] | None = None
    min_samples: PositiveInt = 10
    resolve_at: Annotated[float, Field(allow_inf_nan=False)] | None = None
    resolve_after_s: NonNegativeInt | None = None

    @property
    def alert_type(self) -> AlertType:
        return AlertType.SCORE

    @model_validator(mode="after")
    def _check(self) -> ScoreRule:
        if self.floor is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold: with a floor it is a share in (0, 1], got "
                             f"{self.threshold}")
        at = self.resolve_at
        if at is not None and self.floor is None and at < self.threshold:
            raise ValueError(f"resolve_at: must be at or above threshold ({self.threshold}), "
                             f"got {at}")
        if at is not None and self.floor is not None and at >= self.threshold:
            raise ValueError(f"resolve_at: must be below threshold ({self.threshold}), got {at}")
        return self


def zone_info(name: str) -> tzinfo:
    """The IANA time zone ``name``; ValueError naming it when unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         f"Europe/Paris or UTC)") from None


class ToolPolicy(BaseModel):
    """One entry of a ``tool_policy`` rule: the tools the agents matching ``agents`` may call.
    Globs (``*``, ``?``, ``[abc]``) match whole names, case-sensitively."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: Annotated[tuple[str, ...], Field(min_length=1)] = ("*",)
    """Globs of agent ids this entry applies to (every matching entry applies)."""
    allow: tuple[str, ...] | None = None
    """Globs of the tools these agents may call; None: any tool not denied."""
    deny: tuple[str, ...] = ()
    """Globs of tools these agents may not call (deny wins over allow)."""


class ToolPolicyRule(_RuleBase):
    """Fires at a session's first tool call outside the policies of its agent (a tool that
    a ``deny`` glob matches, or that no glob of an ``allow`` list matches); resolves when
    the session ends or expires. No policies (the default): never fires."""

    type: Literal["tool_policy"] = "tool_policy"
    scope: Literal[AlertScope.SESSION] = AlertScope.SESSION
    severity: Severity = Severity.CRITICAL
    policies: tuple[ToolPolicy, ...] = ()

    @property
    def alert_type(self) -> AlertType:
        return AlertType.TOOL_POLICY

    def hysteresis_error(self) -> str | None:
        """The cross-field check (named as the other rules' one)."""
        for i, policy in enumerate(self.policies):
            if policy.allow is None and not policy.deny:
                return f"policies.{i}: a policy needs `allow` or `deny` (lists of tool globs)"
        return None


class GuardrailRule(_RuleBase):
    """Counts ``guardrail`` events (``status: error`` = tripped) of the guardrails ``names``
    (globs; None: all) in the sliding window. Fires at ``min_trips`` trips, or when at
    least ``min_events`` checks are in the window and the tripped share is
    >= ``threshold_ratio`` (either may be None: off). Resolves when the trips fall under
    ``resolve_below_trips`` (None: 0.8 x min_trips) and the share under 0.8 x
    threshold_ratio, or when the window empties."""

    type: Literal["guardrail"] = "guardrail"
    scope: Literal[AlertScope.SESSION, AlertScope.AGENT] = AlertScope.AGENT
    window_s: PositiveInt = 300
    names: tuple[str, ...] | None = None
    min_trips: PositiveInt | None = 5
    threshold_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    min_events: PositiveInt = 20
    resolve_below_trips: PositiveInt | None = None

    @property
    def alert_type(self) -> AlertType:
        return AlertType.GUARDRAIL

    @property
    def resolve_below(self) -> int:
        """``resolve_below_trips`` or its default (0: min_trips is off)."""
        if self.min_trips is None:
            return 0
        if self.resolve_below_trips is None:
            return max(1, int(RESOLVE_BELOW_FACTOR * self.min_trips))
        return self.resolve_below_trips

    def hysteresis_error(self) -> str | None:
        if self.min_trips is None and self.threshold_ratio is None:
            return "min_trips: set min_trips or threshold_ratio (both are off)"
        below = self.resolve_below_trips
        if below is not None and (self.min_trips is None or below >= self.min_trips):
            return f"resolve_below_trips: must be below min_trips ({self.min_trips}), got {below}"
        return None


class LoopCycleRule(_RuleBase):
    """Fires when a session's tool calls (names only, arguments ignored) repeat one cycle of
    2..``max_period`` tools (search -> open -> search -> open ...) ``min_repeats`` times in
    a row within ``window_s``; one tool called again and again is not a cycle (loop_repeat
    and loop_steps see that). Resolves when a call breaks the cycle, when its repeats no
    longer fit in the window, or when the session ends."""

    type: Literal["loop_cycle"] = "loop_cycle"
    scope: Literal[AlertScope.SESSION] = AlertScope.SESSION
    window_s: PositiveInt = 120
    max_period: Annotated[int, Field(ge=2, le=8)] = 4
    min_repeats: Annotated[int, Field(ge=2, le=50)] = 5

    @property
    def alert_type(self) -> AlertType:
        return AlertType.RUNAWAY_LOOP


Rule = Annotated[CostRule | ErrorRateRule | LoopRepeatRule | LoopStepsRule | BudgetRule
                 | LatencyRule | ScoreRule | ToolPolicyRule | GuardrailRule | LoopCycleRule,
                 Field(discriminator="type")]

DEFAULT_RULES: Final[dict[str, dict[str, Any]]] = {
    "session_cost": {"type": "cost"},
    "agent_error_rate": {"type": "error_rate"},
    "loop_repeat": {"type": "loop_repeat"},
    "loop_steps": {"type": "loop_steps"},
    "loop_cycle": {"type": "loop_cycle"},
}


class RulesConfig(BaseModel):
    """Every threshold, window and scope of the detection core."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    disorder_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    step_ms: Annotated[int, Field(gt=0)] = 1000
    session_idle_timeout_s: PositiveInt = 1800
    dedup_ids_per_session: Annotated[int, Field(ge=0)] = 1024
    """Recent event ids remembered per session to drop redelivered events: between this and
    twice this many are kept (two generations), so memory per session stays bounded even
    in a runaway loop; redeliveries arrive close to the original. 0 turns it off."""
    pack_idle_sessions_s: Annotated[float, Field(ge=0)] | None = 60.0
    """A session that has had no event for this much event time (behind the watermark) is
    kept in memory as one compact bytes value (its state dump, all dedup ids included)
    instead of its detectors' objects, and unpacked when an event or one of its timers
    comes: ~10x less memory per idle open session; alerts are exactly the same. Sessions
    with a firing alert stay unpacked. None turns it off; 0 packs at every advance."""
    rules: dict[str, Rule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_rules(self) -> RulesConfig:
        step_us = self.step_ms * 1000
        for name, rule in self.rules.items():
            if isinstance(rule, CostRule | ErrorRateRule | GuardrailRule | ToolPolicyRule):
                problem = rule.hysteresis_error()
                if problem is not None:
                    raise ValueError(f"rules.{name}.{problem}")
            window_s = rule.window_s_or_none
            if window_s is None:
                continue
            if (window_s * 1_000_000) % step_us:
                raise ValueError(
                    f"rules.{name}.window_s: {window_s} s is not a multiple of step_ms "
                    f"({self.step_ms} ms)"
                )
            if -(-self.disorder_us // step_us) >= window_s * 1_000_000 // step_us:
                raise ValueError(
                    f"rules.{name}.window_s: the window ({window_s} s) must be longer than "
                    f"disorder_s ({self.disorder_s} s)"
                )
        return self

    @property
    def disorder_us(self) -> int:
        return round(self.disorder_s * 1_000_000)

    @property
    def step_us(self) -> int:
        return self.step_ms * 1000

    @property
    def enabled_rules(self) -> dict[str, Rule]:
        return {name: rule for name, rule in self.rules.items() if rule.enabled}

    @classmethod
    def default(cls) -> RulesConfig:
        return rules_from_mapping({})


_RULE_ADAPTER: Final[TypeAdapter[Rule]] = TypeAdapter(Rule)
#: the rule types, one per default rule
RULE_TYPES: Final = (*(settings["type"] for settings in DEFAULT_RULES.values()),
                     "budget", "latency", "score", "guardrail", "tool_policy")


def rules_from_mapping(data: Any, *, source: str = "rules") -> RulesConfig:
    """Defaults overridden by ``data`` (the parsed rules file). Raises ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_kind(data)}")
    top = dict(data)
    user_rules = top.pop("rules", None) or {}
    if not isinstance(user_rules, dict):
        raise ConfigError(f"{source}: `rules`: expected a mapping of rule name to settings")
    merged: dict[str, Any] = {name: dict(d) for name, d in DEFAULT_RULES.items()}
    for name, settings in user_rules.items():
        if not isinstance(settings, dict):
            raise ConfigError(
                f"{source}: `rules.{name}`: expected a mapping, got {_kind(settings)}"
            )
        base = merged.get(name)
        if base is not None and settings.get("type", base["type"]) == base["type"]:
            merged[name] = {**base, **settings}
        elif "type" not in settings:
            raise ConfigError(
                f"{source}: `rules.{name}.type`: a new rule needs a type "
                f"({', '.join(RULE_TYPES[:-1])} or {RULE_TYPES[-1]})"
            )
        else:
            merged[name] = dict(settings)
    try:
        return RulesConfig.model_validate({**top, "rules": merged})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_rules(path: str | Path | None) -> RulesConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) rules file; None gives the defaults."""
    if path is None:
        return RulesConfig.default()
    file = Path(path)
    data = read_config_file(file, "rules")
    return rules_from_mapping(data, source=str(file))


def _kind(value: Any) -> str:
    return type(value).__name__


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = [str(p) for p in err["loc"]]
        # a discriminated union puts the tag ("cost") into the location: drop it
        rule_type = None
        if len(loc) >= 3 and loc[0] == "rules" and loc[2] in RULE_TYPES:
            rule_type = loc.pop(2)
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            parts.append(f"`{key}`: unknown key{_did_you_mean(rule_type, loc[-1])}")
        elif err["type"] == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{key}.{msg}" if key else msg)  # a rule's own check: name the rule
        else:
            msg = _ENUM_REPR.sub(r"\1", err["msg"])  # <AlertScope.SESSION: 'session'> -> 'session'
            parts.append(f"`{key}`: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


def _did_you_mean(rule_type: str | None, key: str) -> str:
    """`` (did you mean resolve_below_usd?)`` for a key close to one the rule has."""
    if rule_type is None:
        return ""
    model = _RULE_MODELS[rule_type]
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


_RULE_MODELS: Final[dict[str, type[_RuleBase]]] = {
    "cost": CostRule, "error_rate": ErrorRateRule, "loop_repeat": LoopRepeatRule,
    "loop_steps": LoopStepsRule,
    "budget": BudgetRule, "latency": LatencyRule, "score": ScoreRule,
    "tool_policy": ToolPolicyRule, "guardrail": GuardrailRule, "loop_cycle": LoopCycleRule,
}
_ENUM_REPR: Final = re.compile(r"<\w+\.\w+: ('[^']*')>")
