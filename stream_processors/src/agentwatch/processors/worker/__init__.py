"""``agentwatch worker``: the detection core as a faust-streaming app on Kafka.

Two stages, both thin shells around the pure :class:`~agentwatch.processors.core.Engine`:

* :class:`SessionStage` consumes ``agentwatch.events`` (keyed by tenant/session, so a
  session's events are in one partition, in order). It validates, dead-letters bad input,
  runs the session-scoped rules and forwards what agent- and tenant-scoped rules need to
  an internal topic keyed by agent (or tenant).
* :class:`RekeyedStage` consumes that topic. An agent's events come from every input
  partition, consumed at different speeds, so it holds them until every input partition's
  watermark has passed them and feeds them to its engine in event-time order: the result
  does not depend on how partitions were interleaved (see ``_rekeyed_stage.py``).

State lives in memory and in changelog-backed faust tables, written once per dirty key per
checkpoint, one partition at a time (``_app.py``). :func:`eager_delivery` is the worker's
delivery of fetched records to faust's streams (exported for the benchmarks' peer).
"""

from agentwatch.processors.worker._control import control_records, halt_rules
from agentwatch.processors.worker._faust_internals import eager_delivery
from agentwatch.processors.worker._forward import MARK_KEY
from agentwatch.processors.worker._rekeyed_stage import RekeyedStage
from agentwatch.processors.worker._session_stage import SessionStage, StageOutput
from agentwatch.processors.worker._settings import WorkerSettings

__all__ = [
    "MARK_KEY",
    "RekeyedStage",
    "SessionStage",
    "StageOutput",
    "WorkerSettings",
    "control_records",
    "eager_delivery",
    "halt_rules",
]
