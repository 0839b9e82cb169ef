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

from agentwatch.schemas import AlertScope, Event, EventKind, EventStatus, from_us

__all__ = [
    "MARK_KEY",
    "compact_event",
    "event_from_compact",
    "scope_key",
    "table_key",
]

MARK_KEY: Final = b"~"
_SCOPES: Final = {s.value: s for s in AlertScope}


def compact_event(event: Event, ts_us: int) -> list[Any]:
    return [
        event.event_id, ts_us, event.tenant_id, event.agent_id, event.session_id,
        event.kind.value, event.status.value, event.cost_usd, event.name, event.tool_args_hash,
    ]


def event_from_compact(c: list[Any]) -> Event:
    return Event.model_construct(
        event_id=c[0], ts=from_us(c[1]), tenant_id=c[2], agent_id=c[3], session_id=c[4],
        kind=EventKind(c[5]), status=EventStatus(c[6]), cost_usd=c[7], name=c[8],
        tool_args_hash=c[9],
    )


def scope_key(scope: AlertScope, event: Event) -> tuple[str, str]:
    """The key an agent- or tenant-scoped detector keeps ``event`` under."""
    if scope is AlertScope.AGENT:
        return (event.tenant_id, event.agent_id)
    return (event.tenant_id, event.tenant_id)


def parse_scope(value: str) -> AlertScope:
    return _SCOPES[value]


def table_key(partition: int, *parts: Any) -> bytes:
    """Table keys start with the partition whose changelog holds them: a restarted worker
    finds a partition's keys without knowing how the producer hashed them."""
    return orjson.dumps([partition, *parts])
