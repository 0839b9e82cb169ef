"""The three forms of a record on ``agentwatch.events`` and which partition a session owns.

DESIGN.md, "Kafka records". A record's value is

1. one JSON event object, keyed ``<tenant_id>/<session_id>`` (third-party producers);
2. a JSON array of one session's events, same key;
3. a **partition batch**: a JSON array of events of many sessions, every one of which
   maps to the partition the record is written to. Its key names the batch, not a
   session: ``~batch:<partition>`` (no ``/``, so it can never be a session key:
   ``tenant_id`` may not contain one).

Forms 1 and 2 are taken on whatever partition their key landed on (clients hash keys
differently: librdkafka's default is CRC32-based). Only inside a partition batch is the
mapping checked, with :func:`partition_for`, which is Kafka's default partitioner
(murmur2 of the key, as the Java client and aiokafka compute it).

:func:`partition_for` needs ``aiokafka`` (every distribution that talks to Kafka has it);
it is imported on first use so that ``agentwatch.schemas`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = [
    "PARTITION_BATCH_PREFIX",
    "PartitionCache",
    "is_partition_batch",
    "partition_batch_key",
    "partition_for",
    "session_key",
]

#: the key prefix of a partition batch (form 3)
PARTITION_BATCH_PREFIX: Final = b"~batch:"
#: sessions kept by :class:`PartitionCache` before it starts over
_CACHE_MAX: Final = 200_000

_murmur2: Callable[[bytes], int] | None = None


def session_key(tenant_id: str, session_id: str) -> bytes:
    """The key of forms 1 and 2, and what :func:`partition_for` hashes."""
    return f"{tenant_id}/{session_id}".encode()


def partition_batch_key(partition: int) -> bytes:
    return PARTITION_BATCH_PREFIX + str(partition).encode()


def is_partition_batch(key: bytes | None) -> bool:
    return key is not None and key.startswith(PARTITION_BATCH_PREFIX)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``
    (``(murmur2(key) & 0x7fffffff) % partitions``). ~7 µs: cache it per session
    (:class:`PartitionCache`)."""
    global _murmur2  # noqa: PLW0603 -- imported once, on first use
    if _murmur2 is None:
        from aiokafka.partitioner import murmur2  # noqa: PLC0415 -- keeps schemas light

        _murmur2 = murmur2
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


class PartitionCache:
    """``(tenant_id, session_id) -> partition`` for one partition count, remembered
    (a fleet's sessions emit many events each; murmur2 in Python costs ~7 µs)."""

    __slots__ = ("_known", "partitions")

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1 (got {partitions})")
        self.partitions = partitions
        self._known: dict[tuple[str, str], int] = {}

    def get(self, tenant_id: str, session_id: str) -> int:
        skey = (tenant_id, session_id)
        partition = self._known.get(skey)
        if partition is None:
            if len(self._known) >= _CACHE_MAX:
                self._known.clear()
            partition = self._known[skey] = partition_for(
                session_key(tenant_id, session_id), self.partitions)
        return partition
