"""Halt rules on the stream: the control records of the alerts of rules with ``action: halt``.

When such an alert fires, its scope is halted: a halt record goes to the compacted control
topic (``agentwatch.control``), keyed by the scope. When it resolves, the resume record
follows, then a tombstone so compaction can forget the key (``agentwatch.schemas._control``).
The worker and the embedded pipeline both call :func:`control_records` on the alerts they
send, so both write the same records for the same alerts.

An alert re-sent after a crash (identical, see the worker's checkpoints) writes its record
again: the same key and value, so followers see no change.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentwatch.processors.core import RulesConfig
from agentwatch.schemas import Alert, ControlRecord, encode_control

__all__ = ["control_records", "halt_rules"]


def halt_rules(config: RulesConfig) -> frozenset[str]:
    """Names of the enabled rules whose alerts halt their scope."""
    return frozenset(name for name, rule in config.enabled_rules.items()
                     if rule.action == "halt")


def control_records(rules: frozenset[str], alerts: Iterable[Alert]
                    ) -> list[tuple[bytes, bytes | None]]:
    """``(key, value)`` records for the control topic (value None: a tombstone), in order."""
    out: list[tuple[bytes, bytes | None]] = []
    for alert in alerts:
        if alert.rule not in rules:
            continue
        record = ControlRecord.from_alert(alert)
        key, value = encode_control(record)
        out.append((key, value))
        if record.action == "resume":
            out.append((key, None))
    return out
