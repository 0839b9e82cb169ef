"""The one exception tree of agentwatch.

Every error agentwatch raises on purpose derives from :class:`AgentwatchError`,
so a caller can catch the whole family with one ``except``::

    AgentwatchError
    ├── ConfigError          (also ValueError)  a settings or rules file is wrong; names the key
    ├── EventValidationError (also ValueError)  an event breaks the contract; names the field
    ├── PriceTableError      (also ValueError)  a price override file is wrong
    ├── TransportError                          the producer could not hand events on
    ├── AgentHalted                             the agent's session, agent or tenant is halted
    │                                           (raised into agent code on purpose: control=True)
    └── SinkError                               a sink could not write
        └── BackpressureError                   the store is down or slow; carries ``retry_after_s``

The producer never lets any of these reach agent code (it counts and logs
instead), with one exception by design: ``AgentHalted``, from ``llm_call()`` /
``tool_call()`` of a client with ``control=True`` whose scope an alert or an operator
halted. The others surface in the CLI, the workers and the sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentwatch.schemas._control import ControlRecord

__all__ = [
    "AgentHalted",
    "AgentwatchError",
    "BackpressureError",
    "ConfigError",
    "EventValidationError",
    "PriceTableError",
    "SinkError",
    "TransportError",
]


class AgentwatchError(Exception):
    """Root of every error agentwatch raises on purpose."""


class ConfigError(AgentwatchError, ValueError):
    """A configuration value or file is invalid; the message names the key."""


class EventValidationError(AgentwatchError, ValueError):
    """An event does not match the schema; the message names the field and why."""


class PriceTableError(AgentwatchError, ValueError):
    """A model price table (or a user override of it) is invalid."""


class TransportError(AgentwatchError):
    """The producer could not hand events to its transport."""


class SinkError(AgentwatchError):
    """A sink could not write a batch."""


class BackpressureError(SinkError):
    """The store cannot take more right now; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AgentHalted(AgentwatchError):  # noqa: N818 -- the name the issue and users know
    """The session, its agent or its tenant is halted: the agent should stop. ``halt`` is
    the control record that halted it (scope, by whom or which rule, reason, since when)."""

    def __init__(self, halt: ControlRecord) -> None:
        super().__init__(f"agentwatch: {halt.scope_label} halted by {halt.by} "
                         f"since {halt.ts.isoformat()}: {halt.reason}")
        self.halt = halt
