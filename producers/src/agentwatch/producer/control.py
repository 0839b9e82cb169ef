"""The agent obeys: follow the control topic, answer ``halted()``, raise ``AgentHalted``.

With ``control=True`` the client follows the control records (``agentwatch.control``,
see ``agentwatch.schemas._control``) of its tenant, from the beginning of the compacted
topic, so a restarted agent knows at once what is halted now. The records land in a
:class:`HaltTable` (scope key -> halt record); ``halted()`` and every ``llm_call()`` /
``tool_call()`` look up three keys in it (the session, its agent, the tenant): a few
dict lookups, no I/O, no lock. ``emit()`` never looks.

Who follows: with Kafka, a consumer task on the Kafka transport's own event loop (its
background thread: nothing new runs in the agent's threads); with an in-process log
(the embedded pipeline), a small thread waiting on the log.

Fail-open by default: while the control topic cannot be read (Kafka down, topic missing,
at start or later when the consumer reports it), the agent runs, the client logs once and
counts (``client.control_errors``). With ``control_fail_closed=True`` every call is
refused (``AgentHalted`` with ``by="agentwatch"``) until the follower has read the topic
to its end once, and again while it reports errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from agentwatch.producer._queue import RateLimitedLog
from agentwatch.schemas import (
    AgentHalted,
    AlertScope,
    ControlAction,
    ControlRecord,
    control_key,
    decode_control,
)
from agentwatch.schemas.backoff import Backoff

if TYPE_CHECKING:
    from agentwatch.producer._inprocess import InProcessLog
    from agentwatch.producer._kafka import KafkaTransport

__all__ = ["AgentHalted", "Control", "Halt", "HaltTable", "OnHalt", "assign_topic"]

logger = logging.getLogger("agentwatch.producer")

#: A halt is the control record that halted the scope (``scope``, ``by``, ``reason``,
#: ``ts`` = since when, ``alert_id`` when an alert did it).
Halt = ControlRecord
#: ``on_halt``: called on the follower's thread with each halt record that concerns the
#: client (its tenant, its agent, or a session of its tenant), as it arrives.
OnHalt = Callable[[ControlRecord], None]

#: retry the control topic after a failure: from this, doubling, up to the max
_RETRY_FIRST_S: Final = 0.5
_RETRY_MAX_S: Final = 5.0


class HaltTable:
    """What is halted now in one tenant: scope key -> halt record. One writer (the
    follower), any number of readers (the agent's threads): plain dict operations."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._halts: dict[str, ControlRecord] = {}
        self._prefixes = (f"tenant:{tenant_id}", f"agent:{tenant_id}/", f"session:{tenant_id}/")

    def apply(self, key: bytes | None, value: bytes | None) -> ControlRecord | None:
        """Take one record of the control topic; returns the halt it set, if any. Raises
        ValueError for a value that is no control record (the caller logs and goes on)."""
        if value is None:  # a tombstone: the key is no longer halted
            if key is not None:
                self._halts.pop(key.decode(errors="replace"), None)
            return None
        if key is not None and not key.decode(errors="replace").startswith(self._prefixes):
            return None  # another tenant's: not even decoded
        record = decode_control(value)
        if record.tenant_id != self.tenant_id:
            return None
        if record.action is ControlAction.HALT:
            self._halts[record.key] = record
            return record
        self._halts.pop(record.key, None)
        return None

    def lookup(self, agent_id: str, session_id: str) -> ControlRecord | None:
        """The halt that stops this session, its agent or the tenant (in that order)."""
        halts = self._halts
        if not halts:
            return None
        tenant = self.tenant_id
        return (halts.get(control_key(AlertScope.SESSION, tenant, None, session_id))
                or halts.get(control_key(AlertScope.AGENT, tenant, agent_id))
                or halts.get(control_key(AlertScope.TENANT, tenant)))

    def halts(self) -> list[ControlRecord]:
        """Everything halted now, oldest first."""
        return sorted(self._halts.values(), key=lambda h: h.ts)


class Control:
    """The client's side of the control loop: the table, the follower's health, the hook."""

    def __init__(self, tenant_id: str, agent_id: str, *, fail_closed: bool,
                 on_halt: OnHalt | None, log: RateLimitedLog) -> None:
        self.table = HaltTable(tenant_id)
        self.agent_id = agent_id
        self.fail_closed = fail_closed
        self.on_halt = on_halt
        self.live = False  # read the topic to its end once, and no error since
        self.errors = 0
        self._log = log
        self._closed_halt = ControlRecord.by_operator(
            ControlAction.HALT, tenant_id=tenant_id, by="agentwatch",
            reason="the control topic cannot be read and control_fail_closed is set")
        self._stop: Callable[[], None] | None = None

    # -- for the agent --------------------------------------------------------------
    def halted(self, agent_id: str, session_id: str) -> ControlRecord | None:
        halt = self.table.lookup(agent_id, session_id)
        if halt is None and self.fail_closed and not self.live:
            return self._closed_halt
        return halt

    def check(self, agent_id: str, session_id: str) -> None:
        """Raise :class:`AgentHalted` when the session, its agent or the tenant is halted."""
        halt = self.halted(agent_id, session_id)
        if halt is not None:
            raise AgentHalted(halt)

    # -- for the follower -----------------------------------------------------------
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            halt = self.table.apply(key, value)
        except ValueError as exc:
            self._log.warn_limited("control_bad", "agentwatch: skipped a control record: %s",
                                   exc)
            return
        if halt is None or self.on_halt is None:
            return
        if halt.scope is AlertScope.AGENT and halt.agent_id != self.agent_id:
            return
        try:
            self.on_halt(halt)
        except Exception as exc:  # noqa: BLE001 -- a user hook must not stop the follower
            self._log.warn_limited("on_halt", "agentwatch: on_halt raised %r", exc)

    def caught_up(self) -> None:
        if not self.live:
            logger.info("agentwatch: following control records (%d halts in force)",
                        len(self.table.halts()))
        self.live = True

    def failed(self, exc: BaseException) -> None:
        self.live = False
        self.errors += 1
        self._log.warn_limited(
            "control", "agentwatch: cannot read the control topic (%s); the agent %s",
            exc or type(exc).__name__,
            "is refused every call (control_fail_closed)" if self.fail_closed else "runs on")

    # -- followers ------------------------------------------------------------------
    def follow_kafka(self, transport: KafkaTransport, topic: str) -> None:
        """Follow ``topic`` with a consumer on the Kafka transport's event loop."""
        async def start() -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(
                _follow_kafka(self, transport.config, topic))

        task = transport.submit(start()).result(timeout=_RETRY_MAX_S)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

        def stop() -> None:
            # cancel the task and wait for it to stop its consumer (a consumer left open
            # when the transport's loop ends leaks its connections)
            with contextlib.suppress(Exception):
                transport.submit(cancel()).result(timeout=_RETRY_MAX_S)

        self._stop = stop

    def follow_log(self, log: InProcessLog, topic: str) -> None:
        """Follow ``topic`` of an in-process log (the embedded pipeline) on a thread."""
        done = threading.Event()

        def run() -> None:
            offset = 0
            self.caught_up()  # in memory: always reachable
            while not done.is_set():
                if not log.wait(topic, offset, 0.2):
                    continue
                for offset_read, key, value in log.read(topic, offset):
                    self.apply(key, value or None)
                    offset = offset_read + 1

        thread = threading.Thread(target=run, name="agentwatch-control", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(2.0)

        self._stop = stop

    def close(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def _consumer_options(producer_config: dict[str, Any]) -> dict[str, Any]:
    """The producer's connection options (servers, security, client id, timeouts) that an
    ``AIOKafkaConsumer`` takes too."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 -- only with Kafka

    accepted = set(inspect.signature(AIOKafkaConsumer.__init__).parameters) - {"self", "loop"}
    return {k: v for k, v in producer_config.items() if k in accepted}


async def assign_topic(consumer: Any, topic: str) -> list[Any]:
    """Assign every partition of ``topic``; LookupError while it does not exist."""
    from aiokafka import TopicPartition  # noqa: PLC0415 -- only with Kafka

    if topic not in await consumer.topics():
        raise LookupError(f"topic {topic} does not exist (yet)")
    # a manual assignment makes the client fetch the topic's metadata (partition 0 always
    # exists; the topic is made with one partition, but take all if someone made more)
    consumer.assign([TopicPartition(topic, 0)])
    for _ in range(100):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            break
        await asyncio.sleep(0.02)
    tps = [TopicPartition(topic, p) for p in sorted(partitions or {0})]
    consumer.assign(tps)
    return tps


async def _follow_kafka(control: Control, producer_config: dict[str, Any], topic: str) -> None:
    """Read ``topic`` from its beginning and follow it, for as long as the client lives;
    reconnect with a backoff after a failure."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 -- only with Kafka

    options = _consumer_options(producer_config)
    backoff = Backoff(_RETRY_FIRST_S, _RETRY_MAX_S)
    while True:
        consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=200)
        try:
            await consumer.start()
            tps = await assign_topic(consumer, topic)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            caught_up = False
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for messages in batches.values():
                    for message in messages:
                        control.apply(message.key, message.value)
                if not caught_up:
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        caught_up = True
                        control.caught_up()
                        backoff.reset()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- fail-open: count, log once, retry
            control.failed(exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        # a plain sleep: the follower is stopped by cancelling its task (see
        # follow_kafka), which ends this sleep too
        await asyncio.sleep(backoff.next_s())
