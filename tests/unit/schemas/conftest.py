"""Fixtures for the schema tests: a valid event as a JSON-ready dict."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def event_data() -> dict[str, Any]:
    """A minimal valid event (required fields only), as it would arrive in JSON."""
    return {
        "event_id": "0b7e9c1e-54a4-4c59-9f4e-2f0b1b6a8d11",
        "ts": "2026-11-20T09:00:01.250000Z",
        "agent_id": "agent-1",
        "session_id": "sess-1",
        "kind": "llm_call",
    }


@pytest.fixture
def full_event_data(event_data: dict[str, Any]) -> dict[str, Any]:
    """A valid event with every optional field set."""
    return {
        **event_data,
        "schema_version": 1,
        "tenant_id": "acme",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "00f067aa0ba902b6",
        "name": "chat",
        "status": "error",
        "error_type": "RateLimitError",
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_input_tokens": 200,
        "reasoning_tokens": 50,
        "cost_usd": 0.0123,
        "duration_ms": 812.5,
        "tool_args_hash": "sha256:abc",
        "attributes": {"region": "eu", "retries": 2, "ratio": 0.5, "cached": True},
    }
