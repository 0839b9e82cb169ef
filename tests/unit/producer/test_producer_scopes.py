from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator

import orjson
import pytest

from agentwatch.producer import (
    RAW_TOOL_ARGS_MAX_CHARS,
    Span,
    current_session,
    current_span,
    hash_tool_args,
)
from agentwatch.producer.testing import Collector, collector
from agentwatch.schemas import Event


class ToolFailedError(Exception):
    pass


def _one(aw: Collector, kind: str) -> Event:
    (event,) = [e for e in aw.events if e.kind == kind]
    return event


# -- sessions -------------------------------------------------------------------------------


def test_session_emits_start_and_end_with_one_session_and_trace(aw: Collector) -> None:
    with aw.session() as session:
        pass
    start, end = aw.events
    assert (start.kind, end.kind) == ("session_start", "session_end")
    assert start.session_id == end.session_id == session.session_id
    assert start.trace_id == end.trace_id == session.trace_id
    assert end.status == "ok"
    assert end.duration_ms is not None


def test_session_generates_uuid_session_id_and_trace_id(aw: Collector) -> None:
    with aw.session() as session:
        pass
    assert len(session.session_id) == 36
    assert len(session.trace_id) == 32


def test_session_uses_the_given_id_agent_and_attributes(aw: Collector) -> None:
    with aw.session("conv-7", agent_id="planner", attributes={"user": "u1"}):
        pass
    start = _one(aw, "session_start")
    assert (start.session_id, start.agent_id, start.attributes) == (
        "conv-7",
        "planner",
        {"user": "u1"},
    )


def test_session_attributes_set_during_the_block_go_with_session_end(aw: Collector) -> None:
    with aw.session() as session:
        session.attributes["outcome"] = "resolved"
    assert _one(aw, "session_end").attributes == {"outcome": "resolved"}


def test_session_that_raises_ends_with_error_and_reraises_the_same_exception(
    aw: Collector,
) -> None:
    error = ToolFailedError("boom")
    with pytest.raises(ToolFailedError) as caught, aw.session():
        raise error
    assert caught.value is error
    end = _one(aw, "session_end")
    assert (end.status, end.error_type) == ("error", "ToolFailedError")


def test_nested_session_is_its_own_session_linked_to_the_outer(aw: Collector) -> None:
    with aw.session() as outer, aw.session() as inner:
        pass
    assert inner.session_id != outer.session_id
    assert inner.parent_span_id == outer.span_id
    assert inner.trace_id == outer.trace_id
    inner_start = next(
        e for e in aw.events if e.kind == "session_start" and e.session_id == inner.session_id
    )
    assert inner_start.parent_span_id == outer.span_id


def test_nested_session_inherits_the_agent_id_unless_given(aw: Collector) -> None:
    with aw.session(agent_id="outer-agent"), aw.session() as inner:
        assert inner.agent_id == "outer-agent"


def test_helpers_after_a_nested_session_return_to_the_outer(aw: Collector) -> None:
    with aw.session() as outer:
        with aw.session():
            pass
        with aw.tool_call("after"):
            pass
    assert _one(aw, "tool_call").session_id == outer.session_id


def test_current_session_is_the_innermost_open_session(aw: Collector) -> None:
    assert current_session() is None
    with aw.session() as outer:
        assert current_session() is outer
        with aw.session() as inner:
            assert current_session() is inner
        assert current_session() is outer
    assert current_session() is None


def test_async_with_session(aw: Collector) -> None:
    async def main() -> str:
        async with aw.session() as session:
            async with aw.llm_call(model="gpt-4o"):
                await asyncio.sleep(0)
            return session.session_id

    session_id = asyncio.run(main())
    assert {e.session_id for e in aw.events} == {session_id}


def test_session_as_decorator_opens_one_session_per_call(aw: Collector) -> None:
    @aw.session()
    def run() -> str | None:
        session = current_session()
        return session.session_id if session else None

    first, second = run(), run()
    assert first
    assert second
    assert first != second


def test_session_context_reaches_asyncio_tasks(aw: Collector) -> None:
    async def step(n: int) -> None:
        async with aw.llm_call(model="gpt-4o", name=f"step-{n}"):
            await asyncio.sleep(0)

    async def main() -> str:
        async with aw.session() as session:
            await asyncio.gather(*(asyncio.create_task(step(n)) for n in range(3)))
            return session.span_id

    session_span = asyncio.run(main())
    calls = [e for e in aw.events if e.kind == "llm_call"]
    assert len(calls) == 3
    assert {e.parent_span_id for e in calls} == {session_span}
    assert len({e.session_id for e in aw.events}) == 1


def test_concurrent_tasks_keep_their_own_sessions(aw: Collector) -> None:
    async def agent(name: str) -> None:
        async with aw.session(name):
            for _ in range(3):
                async with aw.tool_call("search"):
                    await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(agent("a"), agent("b"))

    asyncio.run(main())
    tools = [e for e in aw.events if e.kind == "tool_call"]
    assert sorted(e.session_id for e in tools) == ["a", "a", "a", "b", "b", "b"]


# -- llm_call -------------------------------------------------------------------------------


def test_llm_call_records_what_the_span_was_given(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o", provider="openai", name="chat") as span:
        span.input_tokens = 100
        span.output_tokens = 20
        span.cached_input_tokens = 50
        span.reasoning_tokens = 5
        span.attributes["temperature"] = 0.2
    event = _one(aw, "llm_call")
    assert (event.model, event.provider, event.name) == ("gpt-4o", "openai", "chat")
    assert (event.input_tokens, event.output_tokens) == (100, 20)
    assert (event.cached_input_tokens, event.reasoning_tokens) == (50, 5)
    assert event.attributes == {"temperature": 0.2}
    assert event.status == "ok"
    assert event.duration_ms is not None
    assert event.duration_ms >= 0


def test_llm_call_model_can_be_set_during_the_call(aw: Collector) -> None:
    with aw.llm_call() as span:
        span.model = "gpt-4o-mini"
    assert _one(aw, "llm_call").model == "gpt-4o-mini"


def test_llm_call_that_raises_emits_error_and_reraises_the_same_exception(
    aw: Collector,
) -> None:
    error = TimeoutError("model too slow")
    with pytest.raises(TimeoutError) as caught, aw.llm_call(model="gpt-4o"):
        raise error
    assert caught.value is error
    event = _one(aw, "llm_call")
    assert (event.status, event.error_type) == ("error", "TimeoutError")


def test_span_status_error_without_raising(aw: Collector) -> None:
    with aw.tool_call("search") as span:
        span.status = "error"
        span.error_type = "EmptyResult"
    event = _one(aw, "tool_call")
    assert (event.status, event.error_type) == ("error", "EmptyResult")


def test_bad_span_values_are_left_out_not_fatal(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o") as span:
        span.input_tokens = -5
        span.output_tokens = 12.0  # type: ignore[assignment]
        span.cost_usd = float("nan")
        span.attributes["nested"] = {"a": [1, 2]}
        span.attributes["blob"] = b"\x01"
    event = _one(aw, "llm_call")
    assert event.input_tokens is None
    assert event.output_tokens == 12
    assert event.attributes == {"nested": '{"a":[1,2]}', "blob": '"01"'}
    assert aw.transport.rejected == []


def test_over_long_names_are_cut_to_the_contract_limit(aw: Collector) -> None:
    with aw.llm_call(model="m" * 300, name="n" * 300):
        pass
    event = _one(aw, "llm_call")
    assert (len(event.model or ""), len(event.name or "")) == (256, 256)


def test_llm_call_inside_a_session_links_to_it(aw: Collector) -> None:
    with aw.session() as session, aw.llm_call(model="gpt-4o"):
        pass
    event = _one(aw, "llm_call")
    assert (event.session_id, event.trace_id) == (session.session_id, session.trace_id)
    assert event.parent_span_id == session.span_id
    assert event.span_id not in {None, session.span_id}


def test_tool_call_inside_llm_call_is_its_child(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o") as llm, aw.tool_call("search"):
        pass
    assert _one(aw, "tool_call").parent_span_id == llm.span_id


def test_llm_call_outside_a_session_uses_the_default_session(aw: Collector) -> None:
    with aw.llm_call(model="gpt-4o"):
        pass
    event = _one(aw, "llm_call")
    assert event.session_id == aw.default_session_id
    assert event.parent_span_id is None


def test_current_span_is_the_open_span(aw: Collector) -> None:
    assert current_span() is None
    with aw.llm_call(model="gpt-4o") as span:
        assert current_span() is span
    assert current_span() is None


# -- tool_call ------------------------------------------------------------------------------


def test_tool_call_hashes_its_args(aw: Collector) -> None:
    with aw.tool_call("search", args={"q": "paris", "limit": 3}):
        pass
    event = _one(aw, "tool_call")
    assert event.name == "search"
    assert event.tool_args_hash == hash_tool_args({"limit": 3, "q": "paris"})
    assert event.attributes is None


def test_tool_call_without_args_has_no_hash(aw: Collector) -> None:
    with aw.tool_call("ping"):
        pass
    assert _one(aw, "tool_call").tool_args_hash is None


def test_tool_call_args_can_be_set_during_the_call(aw: Collector) -> None:
    with aw.tool_call("search") as span:
        span.set_args({"q": "late"})
    assert _one(aw, "tool_call").tool_args_hash == hash_tool_args({"q": "late"})


def test_tool_call_that_raises_emits_error_and_reraises_the_same_exception(
    aw: Collector,
) -> None:
    error = ToolFailedError("no results")
    with pytest.raises(ToolFailedError) as caught, aw.tool_call("search", args={"q": "x"}):
        raise error
    assert caught.value is error
    event = _one(aw, "tool_call")
    assert (event.status, event.error_type) == ("error", "ToolFailedError")
    assert event.tool_args_hash == hash_tool_args({"q": "x"})


def test_raw_args_are_not_sent_by_default(aw: Collector) -> None:
    with aw.tool_call("search", args={"q": "secret"}):
        pass
    assert "secret" not in b"".join(v for _, v in aw.records).decode()


def test_raw_args_are_sent_as_json_when_opted_in() -> None:
    client = collector(send_raw_tool_args=True)
    with client.tool_call("search", args={"q": "paris", "limit": 3}):
        pass
    attributes = _one(client, "tool_call").attributes
    assert attributes is not None
    assert orjson.loads(str(attributes["tool.args"])) == {"limit": 3, "q": "paris"}
    client.close()


def test_raw_args_are_truncated_to_the_bound() -> None:
    client = collector(send_raw_tool_args=True)
    with client.tool_call("write", args={"text": "x" * 10_000}):
        pass
    attributes = _one(client, "tool_call").attributes
    assert attributes is not None
    assert len(str(attributes["tool.args"])) == RAW_TOOL_ARGS_MAX_CHARS
    assert attributes["tool.args_truncated"] is True
    client.close()


# -- decorators -----------------------------------------------------------------------------


def test_decorated_sync_function_emits_and_returns_its_result(aw: Collector) -> None:
    @aw.tool_call("search")
    def search(query: str, limit: int = 5) -> list[str]:
        return [query] * 2

    assert search("paris") == ["paris", "paris"]
    event = _one(aw, "tool_call")
    assert event.name == "search"
    assert event.tool_args_hash == hash_tool_args({"query": "paris", "limit": 5})


def test_decorated_call_hashes_like_the_context_manager_with_named_args(aw: Collector) -> None:
    @aw.tool_call("search")
    def search(query: str, limit: int = 5) -> None:
        pass

    search(limit=5, query="paris")
    search("paris")
    with aw.tool_call("search", args={"query": "paris", "limit": 5}):
        pass
    assert len({e.tool_args_hash for e in aw.events}) == 1


def test_decorated_tool_defaults_to_the_function_name(aw: Collector) -> None:
    @aw.tool_call()
    def lookup_order(order_id: int) -> int:
        return order_id

    lookup_order(7)
    assert _one(aw, "tool_call").name == "lookup_order"


def test_decorated_method_does_not_hash_self(aw: Collector) -> None:
    class Tools:
        @aw.tool_call("search")
        def search(self, query: str) -> str:
            return query

    Tools().search("x")
    Tools().search("x")
    assert _one_hash(aw) == hash_tool_args({"query": "x"})


def _one_hash(aw: Collector) -> str | None:
    (value,) = {e.tool_args_hash for e in aw.events}
    return value


def test_decorated_function_keeps_its_name_and_doc(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    def ask(prompt: str) -> str:
        """Ask the model."""
        return prompt

    assert (ask.__name__, ask.__doc__) == ("ask", "Ask the model.")


def test_decorated_function_that_raises_emits_error_and_reraises(aw: Collector) -> None:
    error = ToolFailedError("down")

    @aw.tool_call("search")
    def search() -> None:
        raise error

    with pytest.raises(ToolFailedError) as caught:
        search()
    assert caught.value is error
    assert _one(aw, "tool_call").status == "error"


def test_decorated_function_can_fill_its_span_through_current_span(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    def ask() -> None:
        span = current_span()
        assert span is not None
        span.input_tokens, span.output_tokens = 7, 3

    ask()
    event = _one(aw, "llm_call")
    assert (event.input_tokens, event.output_tokens) == (7, 3)


def test_decorated_async_function(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    async def ask(prompt: str) -> str:
        await asyncio.sleep(0)
        span = current_span()
        assert span is not None
        span.output_tokens = 4
        return prompt.upper()

    assert asyncio.run(ask("hi")) == "HI"
    assert _one(aw, "llm_call").output_tokens == 4


def test_decorated_async_function_that_raises(aw: Collector) -> None:
    error = ToolFailedError("async")

    @aw.tool_call("fetch")
    async def fetch(url: str) -> None:
        await asyncio.sleep(0)
        raise error

    with pytest.raises(ToolFailedError) as caught:
        asyncio.run(fetch("http://x"))
    assert caught.value is error
    event = _one(aw, "tool_call")
    assert (event.status, event.tool_args_hash) == ("error", hash_tool_args({"url": "http://x"}))


def test_decorated_generator_spans_the_whole_iteration(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    def stream(n: int) -> Iterator[int]:
        for i in range(n):
            span = current_span()
            assert span is not None
            span.output_tokens = i + 1
            yield i
        return

    assert list(stream(3)) == [0, 1, 2]
    assert _one(aw, "llm_call").output_tokens == 3


def test_decorated_generator_span_is_not_current_between_items(aw: Collector) -> None:
    @aw.tool_call("scan")
    def scan() -> Iterator[Span | None]:
        yield current_span()
        yield current_span()

    seen_inside: list[Span | None] = []
    seen_outside: list[Span | None] = []
    for inside in scan():
        seen_inside.append(inside)
        seen_outside.append(current_span())
    assert all(s is not None for s in seen_inside)
    assert seen_outside == [None, None]


def test_decorated_generator_passes_send_values_and_return_value(aw: Collector) -> None:
    @aw.tool_call("echo")
    def echo() -> Generator[str, str, None]:
        received = yield "ready"
        yield f"got {received}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    with pytest.raises(StopIteration):
        next(gen)
    assert _one(aw, "tool_call").status == "ok"


def test_decorated_generator_that_raises_emits_error(aw: Collector) -> None:
    @aw.tool_call("scan")
    def scan() -> Iterator[int]:
        yield 1
        raise ToolFailedError("mid-stream")

    with pytest.raises(ToolFailedError):
        list(scan())
    event = _one(aw, "tool_call")
    assert (event.status, event.error_type) == ("error", "ToolFailedError")


def test_decorated_generator_closed_early_ends_ok(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    def stream() -> Iterator[int]:
        yield from range(100)

    for item in stream():
        if item == 2:
            break
    assert _one(aw, "llm_call").status == "ok"


def test_decorated_generator_receives_thrown_exceptions(aw: Collector) -> None:
    @aw.tool_call("scan")
    def scan() -> Generator[str, None, None]:
        try:
            yield "first"
        except ToolFailedError:
            yield "handled"

    gen = scan()
    next(gen)
    assert gen.throw(ToolFailedError("x")) == "handled"
    gen.close()
    assert _one(aw, "tool_call").status == "ok"


def test_decorated_async_generator(aw: Collector) -> None:
    @aw.llm_call(model="gpt-4o")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            span = current_span()
            assert span is not None
            span.output_tokens = i + 1
            yield i

    async def main() -> list[int]:
        return [i async for i in stream(3)]

    assert asyncio.run(main()) == [0, 1, 2]
    event = _one(aw, "llm_call")
    assert (event.status, event.output_tokens) == ("ok", 3)


def test_decorated_async_generator_that_raises_emits_error(aw: Collector) -> None:
    @aw.tool_call("scan")
    async def scan() -> AsyncIterator[int]:
        yield 1
        raise ToolFailedError("mid-stream")

    async def main() -> None:
        async for _ in scan():
            pass

    with pytest.raises(ToolFailedError):
        asyncio.run(main())
    assert _one(aw, "tool_call").error_type == "ToolFailedError"


def test_decorated_async_generator_passes_asend_values(aw: Collector) -> None:
    @aw.tool_call("echo")
    async def echo() -> AsyncGenerator[str, str]:
        received = yield "ready"
        yield f"got {received}"

    async def main() -> list[str]:
        gen = echo()
        first = await gen.__anext__()
        second = await gen.asend("x")
        await gen.aclose()
        return [first, second]

    assert asyncio.run(main()) == ["ready", "got x"]
    assert _one(aw, "tool_call").status == "ok"


def test_decorated_session_generator_keeps_the_session_inside(aw: Collector) -> None:
    @aw.session("stream-session")
    def run() -> Iterator[str | None]:
        with aw.tool_call("inner"):
            pass
        session = current_session()
        yield session.session_id if session else None

    assert list(run()) == ["stream-session"]
    assert _one(aw, "tool_call").session_id == "stream-session"


# -- failures inside the helpers --------------------------------------------------------------


def test_helper_that_fails_to_start_still_runs_the_block_and_raises_nothing(
    aw: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, call: object) -> None:
        raise RuntimeError("telemetry bug")

    monkeypatch.setattr("agentwatch.producer._scopes.LLMCallScope._begin", broken)
    ran = []
    with aw.llm_call(model="gpt-4o") as span:
        span.input_tokens = 3
        ran.append(True)

    @aw.llm_call(model="gpt-4o")
    def ask() -> str:
        return "answer"

    assert ask() == "answer"
    assert ran == [True]
    assert aw.events == []
    assert aw.stats.failed == 2


def test_helper_that_fails_to_finish_raises_nothing(
    aw: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, active: object, exc: object) -> None:
        raise RuntimeError("telemetry bug")

    monkeypatch.setattr("agentwatch.producer._scopes.ToolCallScope._finish", broken)
    with aw.tool_call("search"):
        pass
    assert aw.stats.failed == 1
