"""The OpenAI Agents SDK through its OpenTelemetry instrumentation
(``opentelemetry-instrumentation-openai-agents``) into ``AgentwatchSpanProcessor``: a real
agent run, its model calls answered by a local HTTP server that speaks the OpenAI
Responses API on 127.0.0.1, gives the events of the GenAI mapping: the agent step, each
model call with its tokens and cost, each tool call with its arguments' hash and errors.

These are the README's three lines (instrument, add the processor), no agentwatch code
of its own for the framework.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from agents import (
    Agent,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_trace_processors,
)
from aiohttp import web
from framework_tracing import Traced, traced_run
from openai import AsyncOpenAI
from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor

from agentwatch.producer import hash_tool_args
from agentwatch.producer.genai import map_span
from agentwatch.producer.otel import genai_span
from agentwatch.schemas import EventKind, EventStatus, default_price_table

MODEL = "gpt-4o-mini"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"
ORDER_ARGS = '{"order_id": "A-17"}'


# -- a local server that answers like the OpenAI Responses API -----------------------------

def response(number: int, output: list[dict[str, Any]], usage: tuple[int, int, int]
             ) -> dict[str, Any]:
    tokens_in, tokens_out, cached = usage
    return {
        "id": f"resp_{number}", "object": "response", "created_at": int(time.time()),
        "status": "completed", "model": SERVED_MODEL, "output": output,
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
        "incomplete_details": None, "instructions": None, "metadata": {},
        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out,
                  "total_tokens": tokens_in + tokens_out,
                  "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


async def responses(request: web.Request) -> web.Response:
    """First turn: call both tools; once their outputs are in the input: the answer."""
    body = await request.json()
    items = body["input"] if isinstance(body["input"], list) else []
    if any(item.get("type") == "function_call_output" for item in items):
        message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": "A-17 has shipped.",
                                "annotations": []}]}
        return web.json_response(response(2, [message], (160, 12, 100)))
    return web.json_response(response(1, [
        function_call("call_1", "lookup_order", ORDER_ARGS),
        function_call("call_2", "refund_order", ORDER_ARGS),
    ], (120, 18, 0)))


# -- the agent -----------------------------------------------------------------------------

@function_tool
def lookup_order(order_id: str) -> str:
    """Where an order is."""
    return f"{order_id}: shipped"


@function_tool
def refund_order(order_id: str) -> str:
    """Refund an order."""
    raise RuntimeError(f"refunds of {order_id} are closed")


async def run_agent() -> str:
    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test-key",
                             max_retries=0)
        agent = Agent(name="concierge", instructions="Help with orders.",
                      tools=[lookup_order, refund_order],
                      model=OpenAIResponsesModel(model=MODEL, openai_client=client))
        result = await Runner.run(agent, "Where is my order A-17? Refund it.")
        await client.close()
        return str(result.final_output)
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    """One agent run under the instrumentation: the events the processor emitted, and the
    finished spans."""
    # the README's lines: the instrumentation (instead of the SDK's own exporter) ...
    instrumentor = OpenAIAgentsInstrumentor(replace_existing_processors=True)
    try:
        with traced_run(instrumentor, lambda _provider: asyncio.run(run_agent()),
                        "A-17 has shipped.") as got:
            yield got
    finally:
        set_trace_processors([])


def test_every_span_of_the_run_becomes_its_mapped_event(traced: Traced) -> None:
    events, spans, processor = traced
    by_span = {e.span_id: orjson.loads(e.model_dump_json(exclude_none=True)) for e in events}
    assert len(spans) == 6  # workflow, agent, two model calls, two tools
    for span in spans:
        mapped = map_span(genai_span(span))
        assert isinstance(mapped, dict), span.name
        event = by_span.pop(mapped["span_id"])
        for key, value in mapped.items():
            assert event[key] == value, (span.name, key)
    assert by_span == {}
    assert (processor.stats.events, processor.stats.invalid_spans, processor.stats.errors) == (
        6, 0, 0)


def test_the_model_calls_carry_model_tokens_and_cost(traced: Traced) -> None:
    events, _, _ = traced
    calls = sorted((e for e in events if e.kind is EventKind.LLM_CALL),
                   key=lambda e: e.input_tokens or 0)
    assert [(c.model, c.provider, c.name) for c in calls] == [
        (SERVED_MODEL, "openai", "chat")] * 2
    assert [(c.input_tokens, c.output_tokens, c.cached_input_tokens) for c in calls] == [
        (120, 18, 0), (160, 12, 100)]
    prices = default_price_table()
    for call in calls:
        assert call.cost_usd == prices.cost_usd(
            SERVED_MODEL, call.input_tokens, call.output_tokens, call.cached_input_tokens)
        assert call.cost_usd is not None
        assert call.cost_usd > 0


def test_the_tool_calls_carry_the_arguments_hash_and_the_failure(traced: Traced) -> None:
    events, _, _ = traced
    tools = {e.name: e for e in events if e.kind is EventKind.TOOL_CALL}
    assert sorted(tools) == ["lookup_order", "refund_order"]
    expected_hash = hash_tool_args({"order_id": "A-17"})
    assert {t.tool_args_hash for t in tools.values()} == {expected_hash}
    assert tools["lookup_order"].status is EventStatus.OK
    refund = tools["refund_order"]
    assert refund.status is EventStatus.ERROR
    assert refund.attributes is not None
    # the SDK redacts the exception's text from the trace; the tool and the failure stay
    assert "Error running tool" in str(refund.attributes["otel.status_description"])


def test_the_run_is_one_session_nested_under_the_agent_step(traced: Traced) -> None:
    events, _, _ = traced
    (agent,) = [e for e in events if e.kind is EventKind.AGENT_STEP]
    assert (agent.name, agent.agent_id) == ("concierge", "concierge")
    # one run is one trace, and without gen_ai.conversation.id the trace is the session
    assert {e.session_id for e in events} == {agent.trace_id}
    for event in events:
        if event.kind in (EventKind.LLM_CALL, EventKind.TOOL_CALL):
            assert event.parent_span_id == agent.span_id
            # the instrumentation names the agent on its own span only
            assert event.agent_id == "shop-app"
    (workflow,) = [e for e in events if e.kind is EventKind.CUSTOM]
    assert agent.parent_span_id == workflow.span_id
