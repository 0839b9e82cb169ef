"""What the session stage forwards to the rekeyed stage, and the table keys both use.

Forwarded events are compact JSON arrays with only what agent- and tenant-scoped
detectors read (cost already priced by the session stage); the rekeyed stage turns
them into :class:`ForwardedEvent` objects (what the detectors read) without validating
them again.

Messages on the internal topic (JSON objects):

* data, keyed by the scope key ``[tenant_id, agent_id]`` (or ``[tenant_id, tenant_id]``):
  ``{"s": "agent", "p": <input partition>, "e": [<compact event>, ...]}``
* marks, keyed ``"~"`` and sent to every partition: ``{"p": <input partition>,
  "w": <largest event time seen there, µs>, "idle": <bool>}``. They carry each input
  partition's progress to every rekeyed partition (see ``_rekeyed_stage.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, cast

import orjson

from agentwatch.schemas import Event, EventKind, EventStatus, from_us

__all__ = [
    "MARK_KEY",
    "ForwardedEvent",
    "compact_event",
    "event_from_compact",
    "table_key",
]

MARK_KEY: Final = b"~"


def compact_event(event: Event, ts_us: int) -> list[Any]:
    """Ten fields; three more (duration_ms, model, and a score's attributes: the latency
    and score rules read them) when one of them is set."""
    compact = [
        event.event_id, ts_us, event.tenant_id, event.agent_id, event.session_id,
        event.kind.value, event.status.value, event.cost_usd, event.name, event.tool_args_hash,
    ]
    score = event.kind is EventKind.SCORE
    if score or event.duration_ms is not None or event.model is not None:
        compact += (event.duration_ms, event.model, event.attributes if score else None)
    return compact


_KINDS: Final = {k.value: k for k in EventKind}
_STATUSES: Final = {s.value: s for s in EventStatus}
_PLAIN_FIELDS: Final = 10


class ForwardedEvent:
    """A compact event as the rekeyed stage's engines read it: the attributes of
    :class:`Event` that the detectors read, in a class of its own (compiled by mypyc, a
    plain struct) instead of a pydantic model per event on the hot path. Tokens are None:
    the session stage priced the cost (``cost_usd``) before forwarding."""

    def __init__(self, c: list[Any]) -> None:
        self.event_id: str = c[0]
        self.ts_us: int = c[1]
        self.tenant_id: str = c[2]
        self.agent_id: str = c[3]
        self.session_id: str = c[4]
        self.kind: EventKind = _KINDS[c[5]]
        self.status: EventStatus = _STATUSES[c[6]]
        self.cost_usd: float | None = c[7]
        self.name: str | None = c[8]
        self.tool_args_hash: str | None = c[9]
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens: int | None = None
        if len(c) > _PLAIN_FIELDS:
            self.duration_ms: float | None = c[10]
            self.model: str | None = c[11]
            self.attributes: dict[str, Any] | None = c[12]
        else:
            self.duration_ms = self.model = self.attributes = None

    @property
    def ts(self) -> datetime:
        return from_us(self.ts_us)


def event_from_compact(c: list[Any]) -> Event:
    """The event the session stage compacted, for the core's ``Engine.process``, which
    reads it by attribute only: a :class:`ForwardedEvent`, typed as the :class:`Event` it
    stands in for (mypyc checks no argument of a non-native class such as Event, so the
    compiled core takes it as the interpreter does). No validation: the session stage
    validated it, the rekeyed stage checked the compact form's types and ranges."""
    return cast("Event", ForwardedEvent(c))


def table_key(partition: int, *parts: Any) -> bytes:
    """Table keys start with the partition whose changelog holds them: a restarted worker
    finds a partition's keys without knowing how the producer hashed them."""
    return orjson.dumps([partition, *parts])
