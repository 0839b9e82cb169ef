"""Alert state per (rule, key): fire once, resolve, cooldown; stable alert ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.processors.core._rules import Rule
from agentwatch.schemas import Alert, AlertScope, AlertState, from_us

__all__ = ["DUMP_IDS", "LOAD_IDS", "SAMPLE_SIZE", "AlertTracker", "Firing", "Sample",
           "ScopeKey", "SessionCodec", "alert_id_for"]

#: how many contributing event ids an alert carries
SAMPLE_SIZE: Final = 10
_NAMESPACE: Final = uuid.UUID("5b0e6c1a-6f44-4c55-9f3b-6167656e7477")  # fixed: ids are stable
_NO_COOLDOWN: Final = -(1 << 62)

#: While the engine dumps a session's state: the event ids its dump keeps (id -> position).
#: A tracker's sample refers to those by position (an int) instead of repeating them: a
#: session's samples were a third of its checkpointed bytes. Empty otherwise.
DUMP_IDS: Final[dict[str, int]] = {}
#: While the engine loads a session's state: the ids those positions refer to.
LOAD_IDS: Final[list[str]] = []



class SessionCodec:
    """What the detectors of one session share while the engine dumps or loads its state
    (format 2, ``Engine.dump_key``): written once per session instead of once per
    detector. ``base_us``: the session's last event time; times are written as
    ``base_us - t`` (small numbers, the same digits in every detector). ``agent_id``: the
    session's agent (a tracker of another agent says so). ``index`` (dumping): event id ->
    position in ``ids``, the session's id table, which samples grow as they refer to ids
    not in it yet; ``ids`` (loading): the table."""

    __slots__ = ("agent_id", "base_us", "ids", "index")

    def __init__(self, base_us: int, agent_id: str | None, ids: list[str],
                 index: dict[str, int]) -> None:
        self.base_us = base_us
        self.agent_id = agent_id
        self.ids = ids
        self.index = index

    def position(self, event_id: str) -> int:
        """Where ``event_id`` is in the id table (appended when new)."""
        index = self.index
        found = index.get(event_id)
        if found is None:
            found = index[event_id] = len(self.ids)
            self.ids.append(event_id)
        return found

    def event_id(self, position: Any) -> str:
        ids = self.ids
        if not isinstance(position, int) or not 0 <= position < len(ids):
            raise ValueError(f"a sample refers to event id #{position} of {len(ids)} in a "
                             "state dump")
        return ids[position]


#: (tenant_id, scoped id): the session id, agent id, or the tenant id again. Typed as a
#: variable-length tuple on purpose: mypyc unboxes ``tuple[str, str]`` into a C struct and
#: boxes a new tuple for every dict lookup (each detector, each event); ``tuple[str, ...]``
#: stays the caller's object
ScopeKey = tuple[str, ...]


def alert_id_for(rule: str, scope: AlertScope, key: ScopeKey, fired_ts_us: int) -> str:
    """Stable id of one alert episode: the same events give the same id in every runtime."""
    name = f"{rule}\x1f{scope}\x1f{key[0]}\x1f{key[1]}\x1f{fired_ts_us}"
    return str(uuid.uuid5(_NAMESPACE, name))


#: a sample's list grows by copies from this many ids on: appended to, a list of 8 would
#: take room for 16 (CPython's growth), a copy takes room for exactly what it holds
_RIGHT_SIZED_FROM: Final = 8


class Sample:
    """The ``SAMPLE_SIZE`` most recent event ids appended (a ring; read oldest first).
    A deque with a maxlen took 624 bytes whatever it held, three of them per session.
    An :class:`AlertTracker` is its own sample (one object instead of two: four trackers
    a session)."""

    __slots__ = ("_ids", "_pos")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._pos = 0  # where the next id goes once the ring is full

    def append(self, event_id: str) -> None:
        ids = self._ids
        n = len(ids)
        if n < SAMPLE_SIZE:
            if n < _RIGHT_SIZED_FROM:
                ids.append(event_id)
            else:  # a full ring of 10 takes 10 slots, not 16
                self._ids = ids + [event_id]  # noqa: RUF005 -- exactly sized, unlike [*ids, ...]
            return
        pos = self._pos
        ids[pos] = event_id
        self._pos = 0 if pos + 1 == SAMPLE_SIZE else pos + 1

    def extend(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self.append(event_id)

    def ids(self) -> list[str]:
        """Oldest first."""
        ids, pos = self._ids, self._pos
        return ids[pos:] + ids[:pos] if pos else list(ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self._ids)


@dataclass(slots=True)
class Firing:
    alert_id: str
    fired_ts_us: int


class AlertTracker(Sample):
    """The alert state machine of one (rule, key), and its sample of contributing event
    ids (:attr:`sample` is the tracker itself). Not thread-safe; owned by a detector."""

    __slots__ = ("agent_id", "cooldown_until_us", "firing", "key", "session_id")

    def __init__(self, key: ScopeKey, agent_id: str | None, session_id: str | None) -> None:
        super().__init__()
        self.key = key
        self.agent_id = agent_id
        self.session_id = session_id
        self.firing: Firing | None = None
        self.cooldown_until_us = _NO_COOLDOWN

    @property
    def sample(self) -> Sample:
        """The most recent contributing event ids (the tracker: no second object)."""
        return self

    def __bool__(self) -> bool:
        return True  # a tracker is never false, whatever its sample's length

    @property
    def is_firing(self) -> bool:
        """Read after a call that may resolve: a property is never narrowed by mypy, so code
        compiled with mypyc re-checks it instead of trusting an earlier ``firing`` test."""
        return self.firing is not None

    def dump(self) -> dict[str, Any]:
        """Only what differs from a new tracker: ``a`` agent id, ``s`` session id (``1``:
        the key's, as in session scope), ``f`` [alert id, fired at] while firing, ``c``
        cooldown end, ``i`` the sample (an int: a position in ``DUMP_IDS``)."""
        out: dict[str, Any] = {}
        if self.agent_id is not None:
            out["a"] = self.agent_id
        session_id = self.session_id
        if session_id is not None:
            out["s"] = 1 if session_id == self.key[1] else session_id
        firing = self.firing
        if firing is not None:
            out["f"] = [firing.alert_id, firing.fired_ts_us]
        if self.cooldown_until_us != _NO_COOLDOWN:
            out["c"] = self.cooldown_until_us
        ids = self.sample.ids()
        if ids:
            index = DUMP_IDS
            out["i"] = [index.get(i, i) for i in ids] if index else ids
        return out

    @staticmethod
    def from_dump(key: ScopeKey, data: Any) -> AlertTracker:
        """:meth:`dump` data, or the first format's list ``[agent id, session id, alert id,
        fired at, cooldown end, sample]``."""
        if isinstance(data, list):
            tracker = AlertTracker(key, data[0], data[1])
            if data[2] is not None:
                tracker.firing = Firing(data[2], data[3])
            tracker.cooldown_until_us = data[4]
            tracker.sample.extend(data[5])
            return tracker
        session_id = data.get("s")
        tracker = AlertTracker(key, data.get("a"), key[1] if session_id == 1 else session_id)
        firing = data.get("f")
        if firing is not None:
            tracker.firing = Firing(firing[0], firing[1])
        tracker.cooldown_until_us = data.get("c", _NO_COOLDOWN)
        ids = LOAD_IDS
        for item in data.get("i", ()):
            if isinstance(item, int):
                if not 0 <= item < len(ids):
                    raise ValueError(f"a sample refers to event id #{item} of {len(ids)} in a "
                                     "state dump")
                tracker.sample.append(ids[item])
            else:
                tracker.sample.append(item)
        return tracker

    def dump_compact(self, codec: SessionCodec) -> Any:
        """Format 2 (a session's state): the sample as positions in the session's id table,
        a bare list when the rest is a new session tracker's (the session's agent, the key's
        session id, not firing, no cooldown); else ``[positions, extra]`` with ``extra``
        holding only what differs: ``a`` agent id, ``s`` session id (null: none), ``f``
        [alert id, fired at], ``c`` cooldown end."""
        positions = [codec.position(i) for i in self.sample.ids()]
        firing = self.firing
        if (firing is None and self.cooldown_until_us == _NO_COOLDOWN
                and self.agent_id == codec.agent_id and self.session_id == self.key[1]):
            return positions  # the common case: no dict to build
        extra: dict[str, Any] = {}
        if self.agent_id != codec.agent_id:
            extra["a"] = self.agent_id
        if self.session_id != self.key[1]:
            extra["s"] = self.session_id
        if firing is not None:
            extra["f"] = [firing.alert_id, firing.fired_ts_us]
        if self.cooldown_until_us != _NO_COOLDOWN:
            extra["c"] = self.cooldown_until_us
        return [positions, extra]

    @staticmethod
    def from_compact(key: ScopeKey, data: Any, codec: SessionCodec) -> AlertTracker:
        """:meth:`dump_compact` data."""
        if data and isinstance(data[0], list):
            positions, extra = data[0], data[1]
        else:
            positions, extra = data, {}
        tracker = AlertTracker(key, extra.get("a", codec.agent_id), extra.get("s", key[1]))
        firing = extra.get("f")
        if firing is not None:
            tracker.firing = Firing(firing[0], firing[1])
        tracker.cooldown_until_us = extra.get("c", _NO_COOLDOWN)
        sample = tracker.sample
        for position in positions:
            sample.append(codec.event_id(position))
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
            event_ids=self.sample.ids(),
        )
