"""The GenAI span mapping is part of the light producer: plain values in, no OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys

from agentwatch.producer import hash_tool_args
from agentwatch.producer.genai import GenAISpan, Skipped, map_span
from agentwatch.producer.testing import Collector


def test_the_mapping_imports_no_opentelemetry_package() -> None:
    code = ("import sys, agentwatch.producer.genai; "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'google'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_a_mapped_span_emitted_as_it_is_arrives_as_a_priced_event(aw: Collector) -> None:
    span = GenAISpan(
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
        name="chat gpt-4o", start_ns=1_796_032_800_000_000_000,
        end_ns=1_796_032_800_400_000_000,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100},
    )
    event = map_span(span)
    assert not isinstance(event, Skipped)
    aw.emit(event)
    [got] = aw.events
    assert (got.kind, got.model, got.duration_ms) == ("llm_call", "gpt-4o", 400.0)
    assert (got.tenant_id, got.agent_id) == ("acme", "test-agent")  # the client's defaults
    assert got.session_id == "0af7651916cd43dd8448eb211c80319c"  # the trace
    assert got.cost_usd is not None
    assert got.cost_usd > 0
    assert aw.stats.invalid == 0


def test_a_handoff_span_is_a_handoff_event_named_after_the_agent_handed_to(
    aw: Collector,
) -> None:
    """The OpenAI Agents SDK's instrumentation marks a handoff with operation ``handoff``
    and the two agents (opentelemetry-instrumentation-openai-agents, _hooks.py)."""
    span = GenAISpan(
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="c7ad6b7169203332",
        name="triage → billing.handoff", start_ns=1_796_032_800_000_000_000,
        end_ns=1_796_032_800_001_000_000,
        attributes={"gen_ai.operation.name": "handoff", "gen_ai.provider.name": "openai",
                    "gen_ai.agent.name": "triage", "gen_ai.handoff.from_agent": "triage",
                    "gen_ai.handoff.to_agent": "billing"},
    )
    event = map_span(span)
    assert not isinstance(event, Skipped)
    aw.emit(event)
    [got] = aw.events
    assert (got.kind, got.name) == ("handoff", "billing")
    assert got.attributes["gen_ai.handoff.from_agent"] == "triage"
    assert got.attributes["gen_ai.handoff.to_agent"] == "billing"
    assert aw.stats.invalid == 0


def _tool_span(arguments: str) -> GenAISpan:
    return GenAISpan(
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
        name="execute_tool lookup", start_ns=1_796_032_800_000_000_000,
        end_ns=1_796_032_800_400_000_000,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
                    "gen_ai.tool.call.arguments": arguments},
    )


def test_openllmetry_langchain_envelope_hashes_the_inputs_without_the_call_id() -> None:
    hashes = set()
    for call_id in ("call_1", "call_2"):
        event = map_span(_tool_span(
            '{"input_str": "{\'q\': 1}", "tags": [], "metadata": {}, "inputs": {"q": 1}, '
            f'"kwargs": {{"color": "green", "name": null, "tool_call_id": "{call_id}"}}}}'))
        assert isinstance(event, dict)
        hashes.add(event["tool_args_hash"])
    assert hashes == {hash_tool_args({"q": 1})}


def test_arguments_that_only_look_like_the_envelope_are_hashed_whole() -> None:
    event = map_span(_tool_span('{"kwargs": {"id": 1}, "inputs": {"q": 1}}'))
    assert isinstance(event, dict)
    assert event["tool_args_hash"] == hash_tool_args({"kwargs": {"id": 1}, "inputs": {"q": 1}})
