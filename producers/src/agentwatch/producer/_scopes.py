"""Instrumentation helpers: sessions, LLM calls and tool calls as context managers or decorators.

``client.session()``, ``client.llm_call()`` and ``client.tool_call()`` return a
scope usable as ``with``, ``async with`` or a decorator of a sync function, an
async function, a generator or an async generator. The current session and span
travel in a :class:`contextvars.ContextVar`, so nested helpers and ``emit()``
inherit ``session_id``, ``trace_id`` and the parent span, across ``await`` and
into tasks created inside the block. A decorated generator's span covers its
whole iteration and is current only while the generator body runs.

An exception from the user's code is recorded (``status=error``,
``error_type=type(exc).__name__``) and re-raised unchanged; a failure inside the
helper itself is counted and logged, never raised.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from agentwatch.producer._hashing import canonical_json, hash_tool_args
from agentwatch.schemas import MAX_ATTRIBUTE_TEXT

__all__ = [
    "LLMCallScope",
    "Session",
    "SessionScope",
    "Span",
    "ToolCallScope",
    "current_session",
    "current_span",
]

#: Raw tool arguments (``send_raw_tool_args=True``) are cut to this many characters.
RAW_TOOL_ARGS_MAX_CHARS: Final = 4096
_ATTRIBUTE_KEY_MAX: Final = 256
_SHORT_TEXT_MAX: Final = 256  # name, model, provider, error_type (Event contract)
_NS_PER_MS: Final = 1_000_000
_I64_MAX: Final = 2**63 - 1


@dataclass(slots=True, eq=False)
class Span:
    """A running LLM or tool call. Set fields during the call; they are sent on exit.

    Set ``status = "error"`` (and ``error_type``) to record a failure that did not
    raise, e.g. a tool that returned an error result.
    """

    kind: str
    name: str | None
    session_id: str
    span_id: str
    trace_id: str | None = None
    parent_span_id: str | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    tool_args_hash: str | None = None
    status: str | None = None
    error_type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    _raw_args: bool = field(default=False, repr=False)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_args(self, args: Any) -> None:
        """Record tool arguments: hashed now (and sent raw only if the client opted in)."""
        self.tool_args_hash = hash_tool_args(args)
        if self._raw_args:
            raw = canonical_json(args).decode()
            if len(raw) > RAW_TOOL_ARGS_MAX_CHARS:
                self.attributes["tool.args"] = raw[:RAW_TOOL_ARGS_MAX_CHARS]
                self.attributes["tool.args_truncated"] = True
            else:
                self.attributes["tool.args"] = raw


@dataclass(slots=True, eq=False)
class Session:
    """An open session; ``attributes`` set during it are sent with ``session_end``."""

    session_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    agent_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Context:
    session_id: str
    trace_id: str | None
    agent_id: str | None
    span_id: str | None  # innermost open session or operation span
    span: Span | None = None
    session: Session | None = None


_CTX: ContextVar[_Context | None] = ContextVar("agentwatch_context", default=None)


def current_span() -> Span | None:
    """The innermost open ``llm_call`` / ``tool_call`` span of this context, if any."""
    ctx = _CTX.get()
    return None if ctx is None else ctx.span


def current_session() -> Session | None:
    """The innermost open ``session()`` of this context, if any."""
    ctx = _CTX.get()
    return None if ctx is None else ctx.session


class Emitter(Protocol):
    """What the helpers need from the client."""

    @property
    def default_session_id(self) -> str: ...

    @property
    def sends_raw_tool_args(self) -> bool: ...

    def _enqueue(self, payload: dict[str, Any], ctx: _Context | None) -> None: ...

    def _check_halt(self, session_id: str, agent_id: str | None) -> None: ...

    def _report(self, where: str, exc: BaseException) -> None: ...


def new_span_id() -> str:
    return os.urandom(8).hex()


def new_trace_id() -> str:
    return os.urandom(16).hex()


H = TypeVar("H")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class _Active(Generic[H]):
    handle: H
    ctx: _Context | None
    t0_ns: int
    live: bool = True  # False: begin failed; the block runs, nothing is emitted


@dataclass(frozen=True, slots=True)
class _Call:
    """The arguments of a decorated function's call (tools hash them)."""

    signature: inspect.Signature | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _Scope(Generic[H]):
    """Shared machinery: ``with`` / ``async with`` / decorator over begin and finish."""

    def __init__(self, client: Emitter) -> None:
        self._client = client
        self._open: list[tuple[_Active[H], Token[_Context | None]]] = []

    # -- to implement ------------------------------------------------------
    def _begin(self, call: _Call | None) -> _Active[H]:
        raise NotImplementedError

    def _finish(self, active: _Active[H], exc: BaseException | None) -> None:
        raise NotImplementedError

    def _placeholder(self) -> H:
        """A handle for the user's block when ``_begin`` failed (its values are not sent)."""
        raise NotImplementedError

    def _safe_begin(self, call: _Call | None) -> _Active[H]:
        try:
            return self._begin(call)
        except Exception as err:  # noqa: BLE001 -- telemetry never raises into the agent
            self._client._report("starting a span", err)
            return _Active(self._placeholder(), _CTX.get(), 0, live=False)

    # -- context managers ------------------------------------------------
    def __enter__(self) -> H:
        active = self._safe_begin(None)
        self._open.append((active, _CTX.set(active.ctx)))
        return active.handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._open:
            return
        active, token = self._open.pop()
        _reset(token)
        self._safe_finish(active, exc)

    async def __aenter__(self) -> H:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------
    def __call__(self, func: F) -> F:
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None
        if inspect.isasyncgenfunction(func):
            wrapper: Callable[..., Any] = self._wrap_async_gen(func, signature)
        elif inspect.iscoroutinefunction(func):
            wrapper = self._wrap_async(func, signature)
        elif inspect.isgeneratorfunction(func):
            wrapper = self._wrap_gen(func, signature)
        else:
            wrapper = self._wrap_sync(func, signature)
        return cast(F, functools.wraps(func)(wrapper))

    def _safe_finish(self, active: _Active[H], exc: BaseException | None) -> None:
        if not active.live:
            return
        try:
            self._finish(active, exc)
        except Exception as err:  # noqa: BLE001 -- telemetry never raises into the agent
            self._client._report("finishing a span", err)

    def _wrap_sync(
        self, func: Callable[..., Any], signature: inspect.Signature | None
    ) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = self._safe_begin(_Call(signature, args, kwargs))
            token = _CTX.set(active.ctx)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _reset(token)
                self._safe_finish(active, exc)
                raise
            _reset(token)
            self._safe_finish(active, None)
            return result

        return wrapper

    def _wrap_async(
        self, func: Callable[..., Any], signature: inspect.Signature | None
    ) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = self._safe_begin(_Call(signature, args, kwargs))
            token = _CTX.set(active.ctx)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                _reset(token)
                self._safe_finish(active, exc)
                raise
            _reset(token)
            self._safe_finish(active, None)
            return result

        return wrapper

    def _wrap_gen(
        self, func: Callable[..., Any], signature: inspect.Signature | None
    ) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            active = self._safe_begin(_Call(signature, args, kwargs))
            try:
                result = yield from _drive(func(*args, **kwargs), active.ctx)
            except BaseException as exc:
                self._safe_finish(active, exc)
                raise
            self._safe_finish(active, None)
            return result

        return wrapper

    def _wrap_async_gen(
        self, func: Callable[..., Any], signature: inspect.Signature | None
    ) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            active = self._safe_begin(_Call(signature, args, kwargs))
            agen: AsyncGenerator[Any, Any] = func(*args, **kwargs)
            try:
                send: Any = None
                thrown: BaseException | None = None
                while True:
                    token = _CTX.set(active.ctx)
                    try:
                        if thrown is not None:
                            item = await agen.athrow(thrown)
                        else:
                            item = await agen.asend(send)
                    except StopAsyncIteration:
                        break
                    finally:
                        thrown = None
                        _reset(token)
                    try:
                        send = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:  # noqa: BLE001 -- thrown in: pass it on
                        thrown = exc
            except BaseException as exc:
                self._safe_finish(active, exc)
                raise
            self._safe_finish(active, None)

        return wrapper


def _drive(gen: Generator[Any, Any, Any], ctx: _Context | None) -> Generator[Any, Any, Any]:
    """``yield from gen``, with ``ctx`` current only while ``gen`` itself runs."""
    send: Any = None
    thrown: BaseException | None = None
    while True:
        token = _CTX.set(ctx)
        try:
            item = gen.throw(thrown) if thrown is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        finally:
            thrown = None
            _CTX.reset(token)
        try:
            send = yield item
        except GeneratorExit:
            gen.close()
            raise
        except BaseException as exc:  # noqa: BLE001 -- thrown into us: pass it on
            thrown = exc


def _reset(token: Token[_Context | None]) -> None:
    # exited in another context than it was entered in: leave that context alone
    with contextlib.suppress(ValueError):
        _CTX.reset(token)


def _error_of(exc: BaseException | None) -> str | None:
    if exc is None or isinstance(exc, GeneratorExit):
        return None  # a generator closed early by its consumer ended normally
    return type(exc).__name__


class SessionScope(_Scope[Session]):
    """``client.session(...)``: emits ``session_start`` on entry, ``session_end`` on exit."""

    def __init__(
        self,
        client: Emitter,
        session_id: str | None,
        agent_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        super().__init__(client)
        self._session_id = session_id
        self._agent_id = agent_id
        self._attributes = attributes

    def _begin(self, call: _Call | None) -> _Active[Session]:
        parent = _CTX.get()
        session = Session(
            session_id=self._session_id or str(uuid.uuid4()),
            trace_id=(parent.trace_id if parent is not None else None) or new_trace_id(),
            span_id=new_span_id(),
            parent_span_id=parent.span_id if parent is not None else None,
            agent_id=self._agent_id or (parent.agent_id if parent is not None else None),
            attributes=dict(self._attributes or {}),
        )
        ctx = _Context(
            session.session_id, session.trace_id, session.agent_id, session.span_id, None, session
        )
        active = _Active(session, ctx, time.perf_counter_ns())
        try:
            self._client._enqueue(self._payload(session, "session_start"), None)
        except Exception as err:  # noqa: BLE001 -- telemetry never raises into the agent
            self._client._report("starting a session", err)
        return active

    def _placeholder(self) -> Session:
        return Session(session_id=self._session_id or "", trace_id="", span_id="")

    def _finish(self, active: _Active[Session], exc: BaseException | None) -> None:
        payload = self._payload(active.handle, "session_end")
        payload["duration_ms"] = (time.perf_counter_ns() - active.t0_ns) / _NS_PER_MS
        error_type = _error_of(exc)
        if error_type is not None:
            payload["status"] = "error"
            payload["error_type"] = error_type
        self._client._enqueue(payload, None)

    @staticmethod
    def _payload(session: Session, kind: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "kind": kind,
            "session_id": session.session_id,
            "trace_id": session.trace_id,
            "span_id": session.span_id,
        }
        if session.parent_span_id is not None:
            payload["parent_span_id"] = session.parent_span_id
        if session.agent_id is not None:
            payload["agent_id"] = session.agent_id
        attributes = clean_attributes(session.attributes)
        if attributes:
            payload["attributes"] = attributes
        return payload


class _OperationScope(_Scope[Span]):
    _kind: str = "custom"

    def __init__(self, client: Emitter, name: str | None) -> None:
        super().__init__(client)
        self._name = name

    def _new_span(self, name: str | None) -> tuple[Span, _Context]:
        parent = _CTX.get()
        if parent is None:
            span = Span(
                self._kind,
                name,
                self._client.default_session_id,
                new_span_id(),
                _raw_args=self._client.sends_raw_tool_args,
            )
            agent_id = None
        else:
            span = Span(
                self._kind,
                name,
                parent.session_id,
                new_span_id(),
                parent.trace_id,
                parent.span_id,
                _raw_args=self._client.sends_raw_tool_args,
            )
            agent_id = parent.agent_id
        ctx = _Context(
            span.session_id,
            span.trace_id,
            agent_id,
            span.span_id,
            span,
            parent.session if parent is not None else None,
        )
        return span, ctx

    def _placeholder(self) -> Span:
        return Span(self._kind, self._name, "", "")

    def _safe_begin(self, call: _Call | None) -> _Active[Span]:
        active = super()._safe_begin(call)
        if active.live:  # the one exception meant for agent code: AgentHalted (control=True)
            ctx = active.ctx
            self._client._check_halt(active.handle.session_id,
                                     ctx.agent_id if ctx is not None else None)
        return active

    def _finish(self, active: _Active[Span], exc: BaseException | None) -> None:
        span = active.handle
        payload: dict[str, Any] = {
            "kind": span.kind,
            "session_id": span.session_id,
            "span_id": span.span_id,
            "duration_ms": (time.perf_counter_ns() - active.t0_ns) / _NS_PER_MS,
        }
        if active.ctx is not None and active.ctx.agent_id is not None:
            payload["agent_id"] = active.ctx.agent_id
        for key in ("trace_id", "parent_span_id", "name", "model", "provider"):
            value = getattr(span, key)
            if isinstance(value, str) and value:
                payload[key] = value[:_SHORT_TEXT_MAX]
        for key in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            count = _count(getattr(span, key))
            if count is not None:
                payload[key] = count
        cost = _cost(span.cost_usd)
        if cost is not None:
            payload["cost_usd"] = cost
        if isinstance(span.tool_args_hash, str):
            payload["tool_args_hash"] = span.tool_args_hash
        error_type = _error_of(exc)
        if error_type is None and span.status == "error":
            error_type = span.error_type if isinstance(span.error_type, str) else None
            payload["status"] = "error"
        if error_type is not None:
            payload["status"] = "error"
            payload["error_type"] = error_type[:_SHORT_TEXT_MAX]
        attributes = clean_attributes(span.attributes)
        if attributes:
            payload["attributes"] = attributes
        self._client._enqueue(payload, None)


class LLMCallScope(_OperationScope):
    """``client.llm_call(model=...)``: one ``llm_call`` event on exit."""

    _kind = "llm_call"

    def __init__(
        self, client: Emitter, model: str | None, provider: str | None, name: str | None
    ) -> None:
        super().__init__(client, name)
        self._model = model
        self._provider = provider

    def _begin(self, call: _Call | None) -> _Active[Span]:
        span, ctx = self._new_span(self._name)
        span.model = self._model
        span.provider = self._provider
        return _Active(span, ctx, time.perf_counter_ns())


_NO_ARGS: Final = object()


class ToolCallScope(_OperationScope):
    """``client.tool_call(name, args=...)``: one ``tool_call`` event with the args hash."""

    _kind = "tool_call"

    def __init__(self, client: Emitter, name: str | None, args: Any = _NO_ARGS) -> None:
        super().__init__(client, name)
        self._args = args

    def _begin(self, call: _Call | None) -> _Active[Span]:
        span, ctx = self._new_span(self._name)
        try:
            if call is not None:
                span.set_args(_call_arguments(call))
            elif self._args is not _NO_ARGS and self._args is not None:
                span.set_args(self._args)
        except Exception as err:  # noqa: BLE001 -- telemetry never raises into the agent
            self._client._report("hashing tool arguments", err)
        return _Active(span, ctx, time.perf_counter_ns())

    def __call__(self, func: F) -> F:
        if self._name is None:
            self._name = getattr(func, "__name__", None)
        return super().__call__(func)


def _call_arguments(call: _Call) -> dict[str, Any]:
    """A call's arguments by parameter name, defaults applied, without ``self``/``cls``."""
    if call.signature is None:
        return {"args": list(call.args), "kwargs": call.kwargs}
    try:
        bound = call.signature.bind(*call.args, **call.kwargs)
    except TypeError:  # the call itself is wrong and will raise: hash what was passed
        return {"args": list(call.args), "kwargs": call.kwargs}
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    params = list(call.signature.parameters)
    if params and params[0] in {"self", "cls"}:
        arguments.pop(params[0], None)
    return arguments


def _count(value: Any) -> int | None:
    """A token count as a non-negative int, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _I64_MAX else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= _I64_MAX:
        return int(value)
    return None


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def clean_attributes(attributes: Any) -> dict[str, str | int | float | bool] | None:
    """Attributes as the event contract wants them: string keys, scalar values.

    Other values become their canonical JSON text; over-long keys and text values are cut
    (to the contract's 256 and ``MAX_ATTRIBUTE_TEXT`` characters).
    """
    if not attributes or not isinstance(attributes, dict):
        return None
    out: dict[str, str | int | float | bool] = {}
    for key, value in attributes.items():
        name = (key if isinstance(key, str) else str(key))[:_ATTRIBUTE_KEY_MAX]
        if isinstance(value, str):
            out[name] = value[:MAX_ATTRIBUTE_TEXT]
        elif isinstance(value, bool):
            out[name] = value
        elif isinstance(value, int) and -(2**63) <= value <= _I64_MAX:
            out[name] = int(value)
        elif isinstance(value, float) and math.isfinite(value):
            out[name] = float(value)
        else:
            out[name] = canonical_json(value).decode()[:MAX_ATTRIBUTE_TEXT]
    return out
