"""What the session stage forwards to the rekeyed stage, and the table keys both use.

Forwarded events are compact JSON arrays with only what agent- and tenant-scoped
detectors read (cost already priced by the session stage); the rekeyed stage turns
them back into :class:`Event` objects without validating them again.

Messages on the internal topic (JSON objects):

* data, keyed by the scope key ``[tenant_id, agent_id]`` (or ``[tenant_id, tenant_id]``):
  ``{"s": "agent", "p": <input partition>, "e": [<compact event>, ...]}``
* marks, keyed ``"~"`` and sent to every partition: ``{"p": <input partition>,
  "w": <largest event time seen there, µs>, "idle": <bool>}``. They carry each input
  partition's progress to every rekeyed partition (see ``_rekeyed_stage.py``).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from agentwatch.schemas import Event, EventKind, EventStatus, from_us

__all__ = [
    "MARK_KEY",
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


_FIELDS: Final = (
    "event_id", "ts", "tenant_id", "agent_id", "session_id", "kind", "status", "cost_usd",
    "name", "tool_args_hash",
)
_MORE_FIELDS: Final = (*_FIELDS, "duration_ms", "model", "attributes")
_DEFAULTS: Final = {
    name: info.get_default(call_default_factory=True)
    for name, info in Event.model_fields.items() if not info.is_required()
}
_FIELDS_SET: Final = frozenset(_FIELDS)
_KINDS: Final = {k.value: k for k in EventKind}
_STATUSES: Final = {s.value: s for s in EventStatus}
_new_event = Event.__new__
_set = object.__setattr__


def event_from_compact(c: list[Any]) -> Event:
    """What ``Event.model_construct`` builds (no validation: the session stage validated
    it), ~20x faster: model_construct resolves every default field by field."""
    event = _new_event(Event)
    values = _DEFAULTS.copy()
    values.update(zip(_FIELDS, (
        c[0], from_us(c[1]), c[2], c[3], c[4], _KINDS[c[5]], _STATUSES[c[6]], c[7], c[8], c[9],
    ), strict=True))
    if len(c) > len(_FIELDS):
        values["duration_ms"], values["model"], values["attributes"] = c[10], c[11], c[12]
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(_FIELDS_SET if len(c) == len(_FIELDS)
                                               else _MORE_FIELDS))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def table_key(partition: int, *parts: Any) -> bytes:
    """Table keys start with the partition whose changelog holds them: a restarted worker
    finds a partition's keys without knowing how the producer hashed them."""
    return orjson.dumps([partition, *parts])
