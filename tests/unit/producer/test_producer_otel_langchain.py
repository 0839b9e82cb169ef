"""LangChain through OpenLLMetry's OpenTelemetry instrumentation
(``opentelemetry-instrumentation-langchain``) into ``AgentwatchSpanProcessor``: a real
tool loop (``ChatOpenAI`` with a bound tool, its model calls answered by a local HTTP
server that speaks the OpenAI Chat Completions API on 127.0.0.1) that calls the same tool
with the same arguments again and again gives tool calls of one ``tool_args_hash`` (the
instrumentation puts a per-call ``tool_call_id`` next to the arguments; the mapping hashes
the arguments only), so the default rules see the runaway loop; the model calls carry
model and tokens.

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
from aiohttp import web
from framework_tracing import Traced, traced_run
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from agentwatch.processors.core import Engine, RulesConfig
from agentwatch.processors.replay import replay_lines
from agentwatch.producer import hash_tool_args
from agentwatch.producer.genai import map_span
from agentwatch.producer.otel import genai_span
from agentwatch.schemas import Alert, EventKind, EventStatus, encode_event

MODEL = "gpt-4o-mini"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"
ORDER_ARGS = '{"order_id": "A-17"}'
TURNS = 7


# -- a local server that answers like the OpenAI Chat Completions API ----------------------

async def completions(request: web.Request) -> web.Response:
    """Every turn: call ``lookup_order`` again with the same arguments (a runaway agent);
    each call has its own id, as OpenAI's have."""
    body = await request.json()
    turn = 1 + sum(1 for m in body["messages"] if m["role"] == "assistant")
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{turn}", "type": "function",
         "function": {"name": "lookup_order", "arguments": ORDER_ARGS}}]}
    return web.json_response({
        "id": f"chatcmpl-{turn}", "object": "chat.completion", "created": int(time.time()),
        "model": SERVED_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100 + turn, "completion_tokens": 9,
                  "total_tokens": 109 + turn},
    })


# -- the agent -----------------------------------------------------------------------------

@tool
def lookup_order(order_id: str) -> str:
    """Where an order is."""
    return f"{order_id}: still in the warehouse"


async def run_agent(provider: TracerProvider) -> int:
    """The tool loop: ask the model, run the tools it calls, ask again; ``TURNS`` turns
    under one span (one trace: one session). Returns the number of tool results."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        model = ChatOpenAI(model=MODEL, base_url=f"http://127.0.0.1:{port}/v1",
                           api_key="test-key", max_retries=0).bind_tools([lookup_order])
        messages: list[BaseMessage] = [HumanMessage("Where is my order A-17?")]
        results = 0
        with provider.get_tracer("shop-app").start_as_current_span("order-agent"):
            for _ in range(TURNS):
                reply = await model.ainvoke(messages)
                messages.append(reply)
                for call in reply.tool_calls:  # type: ignore[attr-defined] # an AIMessage
                    messages.append(await lookup_order.ainvoke(call))
                    results += 1
        return results
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    """One agent run under the instrumentation: the events the processor emitted, and the
    finished spans."""
    with traced_run(LangchainInstrumentor(), lambda provider: asyncio.run(run_agent(provider)),
                    TURNS) as got:
        yield got


def test_every_genai_span_of_the_run_becomes_its_mapped_event(traced: Traced) -> None:
    events, spans, processor = traced
    by_span = {e.span_id: orjson.loads(e.model_dump_json(exclude_none=True)) for e in events}
    assert len(spans) == 2 * TURNS + 1  # a model call and a tool per turn, the agent span
    for span in spans:
        mapped = map_span(genai_span(span))
        if span.name == "order-agent":  # the app's own span: no gen_ai.* attribute
            assert not isinstance(mapped, dict)
            continue
        assert isinstance(mapped, dict), span.name
        event = by_span.pop(mapped["span_id"])
        for key, value in mapped.items():
            assert event[key] == value, (span.name, key)
    assert by_span == {}
    assert (processor.stats.events, processor.stats.errors) == (2 * TURNS, 0)


def test_the_instrumentation_puts_a_per_call_id_next_to_the_arguments(traced: Traced) -> None:
    _, spans, _ = traced
    raw = [orjson.loads(str((s.attributes or {})["gen_ai.tool.call.arguments"]))
           for s in spans if (s.attributes or {}).get("gen_ai.operation.name") == "execute_tool"]
    assert len(raw) == TURNS
    assert {orjson.dumps(r["inputs"]) for r in raw} == {orjson.dumps({"order_id": "A-17"})}
    # what made every hash differ before the mapping read the arguments only
    assert sorted(r["kwargs"]["tool_call_id"] for r in raw) == sorted(
        f"call_{turn}" for turn in range(1, TURNS + 1))


def test_the_same_tool_with_the_same_arguments_has_one_hash(traced: Traced) -> None:
    events, _, _ = traced
    tools = [e for e in events if e.kind is EventKind.TOOL_CALL]
    assert len(tools) == TURNS
    assert {(t.name, t.status, t.tool_args_hash) for t in tools} == {
        ("lookup_order", EventStatus.OK, hash_tool_args({"order_id": "A-17"}))}


def test_the_model_calls_carry_model_provider_and_tokens(traced: Traced) -> None:
    events, _, _ = traced
    calls = sorted((e for e in events if e.kind is EventKind.LLM_CALL),
                   key=lambda e: e.input_tokens or 0)
    assert [(c.model, c.provider, c.name) for c in calls] == [(MODEL, "openai", "chat")] * TURNS
    assert [(c.input_tokens, c.output_tokens) for c in calls] == [
        (100 + turn, 9) for turn in range(1, TURNS + 1)]
    assert all(c.cost_usd is not None and c.cost_usd > 0 for c in calls)


def test_the_default_rules_see_the_runaway_loop(traced: Traced) -> None:
    events, _, _ = traced
    assert len({e.session_id for e in events}) == 1  # one trace, no gen_ai.conversation.id
    alerts: list[Alert] = []
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    replay_lines((encode_event(e) for e in ordered), Engine(RulesConfig.default()),
                 alerts.append)
    fired: list[dict[str, Any]] = [a.model_dump(mode="json") for a in alerts
                                   if a.rule == "loop_repeat"]
    assert fired
    assert fired[0]["state"] == "firing"
