"""ClickHouse failures -> SinkError, or BackpressureError when a retry may succeed."""

from __future__ import annotations

import re
from typing import Final

from agentwatch.schemas.errors import BackpressureError, SinkError

__all__ = ["OVERLOAD_RETRY_AFTER_S", "UNREACHABLE_RETRY_AFTER_S", "error_code", "sink_error"]

#: Suggested wait when the engine is up but overloaded (too many parts, memory, ...).
OVERLOAD_RETRY_AFTER_S: Final = 1.0
#: Suggested wait when the server cannot be reached at all.
UNREACHABLE_RETRY_AFTER_S: Final = 5.0

# ClickHouse error codes that describe a passing condition, not a wrong statement.
RETRYABLE_CODES: Final = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (a replica lost its Keeper session)
        252,  # TOO_MANY_PARTS (inserts outpace merges)
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)

_CODE: Final = re.compile(r"\bCode:\s*(\d+)")
# Shares code 252 with "too many parts", but the same block fails on every retry.
_STUCK_FOREVER: Final = "Too many partitions for single INSERT block"


def error_code(message: str) -> int | None:
    """The ClickHouse error code in ``Code: 60. DB::Exception: ...``, if any."""
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


def sink_error(what: str, exc: BaseException, *, code: int | None = None) -> SinkError:
    """``what`` (e.g. "insert into agentwatch.events") failed because of ``exc``."""
    detail = str(exc).strip() or type(exc).__name__
    if code is None:
        code = error_code(detail)
    message = f"{what} failed: {detail}"
    if code in RETRYABLE_CODES and _STUCK_FOREVER not in detail:
        return BackpressureError(message, retry_after_s=OVERLOAD_RETRY_AFTER_S)
    return SinkError(message)
