"""agentwatch producer: three lines in your agent, telemetry that never hurts it.

::

    from agentwatch.producer import Agentwatch, InProcessLog, InProcessTransport

    aw = Agentwatch(agent_id="support-bot", transport=InProcessTransport(InProcessLog()))
    with aw.session():
        with aw.llm_call(model="gpt-4o") as span:
            span.input_tokens, span.output_tokens = 1200, 85

``emit()`` only enqueues; a background thread packs the events of each linger interval
into records and hands them to a :class:`Transport`: with Kafka, one **partition batch**
per partition (key ``~batch:<p>``, every session that partition owns), written to that
partition; with a transport without partitions, one record per session (key
``<tenant_id>/<session_id>``).
"""

from agentwatch.producer._client import Agentwatch, ProducerStats
from agentwatch.producer._hashing import hash_tool_args
from agentwatch.producer._inprocess import InProcessLog, InProcessTransport
from agentwatch.producer._queue import RateLimitedLog
from agentwatch.producer._scopes import (
    RAW_TOOL_ARGS_MAX_CHARS,
    LLMCallScope,
    Session,
    SessionScope,
    Span,
    ToolCallScope,
    current_session,
    current_span,
)
from agentwatch.producer._settings import ProducerSettings
from agentwatch.producer._transport import Record, Transport
from agentwatch.producer.control import AgentHalted, Halt

__all__ = [
    "RAW_TOOL_ARGS_MAX_CHARS",
    "AgentHalted",
    "Agentwatch",
    "Halt",
    "InProcessLog",
    "InProcessTransport",
    "LLMCallScope",
    "ProducerSettings",
    "ProducerStats",
    "RateLimitedLog",
    "Record",
    "Session",
    "SessionScope",
    "Span",
    "ToolCallScope",
    "Transport",
    "current_session",
    "current_span",
    "hash_tool_args",
]
