"""ClickHouse backends: one interface (:class:`Backend`), the same SQL on each.

- :class:`ChdbBackend` -- chDB, the ClickHouse engine in this process, on disk;
- :class:`ClickHouseBackend` -- a ClickHouse server through clickhouse-connect;
- :func:`open_backend` -- picks one from a URL or a path.
"""

from __future__ import annotations

from agentwatch.sinks.backends._open import open_backend
from agentwatch.sinks.backends.base import Backend, Parameters, QueryResult
from agentwatch.sinks.backends.chdb import ChdbBackend
from agentwatch.sinks.backends.clickhouse import ClickHouseBackend

__all__ = [
    "Backend",
    "ChdbBackend",
    "ClickHouseBackend",
    "Parameters",
    "QueryResult",
    "open_backend",
]
