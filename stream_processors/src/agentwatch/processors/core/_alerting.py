"""Alert state per (rule, key): fire once, resolve, cooldown; stable alert ids."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.processors.core._rules import Rule
from agentwatch.schemas import Alert, AlertScope, AlertState, from_us

__all__ = ["SAMPLE_SIZE", "AlertTracker", "Firing", "ScopeKey", "alert_id_for"]

#: how many contributing event ids an alert carries
SAMPLE_SIZE: Final = 10
_NAMESPACE: Final = uuid.UUID("5b0e6c1a-6f44-4c55-9f3b-6167656e7477")  # fixed: ids are stable

#: (tenant_id, scoped id): the session id, agent id, or the tenant id again
ScopeKey = tuple[str, str]


def alert_id_for(rule: str, scope: AlertScope, key: ScopeKey, fired_ts_us: int) -> str:
    """Stable id of one alert episode: the same events give the same id in every runtime."""
    name = f"{rule}\x1f{scope}\x1f{key[0]}\x1f{key[1]}\x1f{fired_ts_us}"
    return str(uuid.uuid5(_NAMESPACE, name))


@dataclass(slots=True)
class Firing:
    alert_id: str
    fired_ts_us: int


class AlertTracker:
    """The alert state machine of one (rule, key). Not thread-safe; owned by a detector."""

    __slots__ = ("agent_id", "cooldown_until_us", "firing", "key", "sample", "session_id")

    def __init__(self, key: ScopeKey, agent_id: str | None, session_id: str | None) -> None:
        self.key = key
        self.agent_id = agent_id
        self.session_id = session_id
        self.firing: Firing | None = None
        self.cooldown_until_us = -(1 << 62)
        self.sample: deque[str] = deque(maxlen=SAMPLE_SIZE)

    @property
    def is_firing(self) -> bool:
        """Read after a call that may resolve: a property is never narrowed by mypy, so code
        compiled with mypyc re-checks it instead of trusting an earlier ``firing`` test."""
        return self.firing is not None

    def dump(self) -> list[Any]:
        firing = self.firing
        return [
            self.agent_id, self.session_id,
            None if firing is None else firing.alert_id,
            None if firing is None else firing.fired_ts_us,
            self.cooldown_until_us, list(self.sample),
        ]

    @staticmethod
    def from_dump(key: ScopeKey, data: list[Any]) -> AlertTracker:
        tracker = AlertTracker(key, data[0], data[1])
        if data[2] is not None:
            tracker.firing = Firing(data[2], data[3])
        tracker.cooldown_until_us = data[4]
        tracker.sample.extend(data[5])
        return tracker

    def can_fire(self, ts_us: int) -> bool:
        return self.firing is None and ts_us >= self.cooldown_until_us

    def fire(
        self, name: str, rule: Rule, ts_us: int, value: float, threshold: float, reason: str
    ) -> Alert:
        alert_id = alert_id_for(name, rule.scope, self.key, ts_us)
        self.firing = Firing(alert_id, ts_us)
        return self._alert(name, rule, AlertState.FIRING, alert_id, ts_us, value, threshold, reason)

    def resolve(
        self, name: str, rule: Rule, ts_us: int, value: float, threshold: float, reason: str
    ) -> Alert:
        firing = self.firing
        assert firing is not None  # noqa: S101 -- callers check is_firing first
        self.firing = None
        self.cooldown_until_us = ts_us + rule.cooldown_s * 1_000_000
        return self._alert(
            name, rule, AlertState.RESOLVED, firing.alert_id, max(ts_us, firing.fired_ts_us),
            value, threshold, reason,
        )

    def _alert(
        self,
        name: str,
        rule: Rule,
        state: AlertState,
        alert_id: str,
        ts_us: int,
        value: float,
        threshold: float,
        reason: str,
    ) -> Alert:
        scope = rule.scope
        return Alert(
            alert_id=alert_id,
            rule=name,
            type=rule.alert_type,
            state=state,
            severity=rule.severity,
            scope=scope,
            key=self.key[1],
            tenant_id=self.key[0],
            agent_id=self.agent_id,
            session_id=self.session_id,
            value=value,
            threshold=threshold,
            window_s=rule.window_s_or_none,
            ts=from_us(ts_us),
            reason=reason,
            event_ids=list(self.sample),
        )
