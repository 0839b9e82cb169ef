"""The endpoints loader on hostile content: any parsed value gives endpoints or a
ConfigError naming the bad key, never another exception."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.alerts._endpoints import endpoints_from_mapping, load_endpoints
from agentwatch.schemas import ConfigError

sys.path.insert(0, str(Path(__file__).parents[1] / "schemas"))
from hostile_inputs import HOSTILE

KEYS = ["endpoints", "name", "url", "secret", "secret_env", "format", "timeout_s", "filters",
        "link_template", "max_attempts", "backoff_initial_s", "backoff_max_s", "concurrency",
        "severities", "types", "tenants", "agents", "rules", "allow_private", "unknown"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.text(max_size=8),
    st.sampled_from(["https://example.com/h", "http://[::1]:99999/", "http://a b", "ftp://x",
                     "json", "slack", "critical", "cost", "{tenant_id}", "{nope}", "HOME",
                     "\x00", "http://" + "a" * 3000]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=15)
ENDPOINT = st.fixed_dictionaries(
    {"name": SCALARS, "url": SCALARS},
    optional=dict.fromkeys(KEYS[3:], VALUES))
FILES = st.one_of(VALUES, st.fixed_dictionaries({"endpoints": st.lists(ENDPOINT, max_size=3)}))


@HOSTILE
@given(FILES)
def test_any_content_gives_endpoints_or_a_config_error(data: Any) -> None:
    try:
        endpoints = endpoints_from_mapping(data)
    except ConfigError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.startswith("endpoints: ")
        assert len(message) > len("endpoints: ")
        return
    for endpoint in endpoints:
        endpoint.webhook_endpoint()


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[" * 50_000, b"endpoints: &e [*e]"])
def test_hostile_files_are_config_errors(tmp_path: Path, content: bytes) -> None:
    file = tmp_path / "endpoints.yaml"
    file.write_bytes(content)
    with pytest.raises(ConfigError, match=str(file)):
        load_endpoints(file)
