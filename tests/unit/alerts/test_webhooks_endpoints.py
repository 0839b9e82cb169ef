"""The endpoints file: YAML and TOML, every error naming the file and key, filters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts import (
    EndpointConfig,
    WebhookEndpoint,
    endpoints_from_mapping,
    load_endpoints,
)
from agentwatch.schemas import Alert, AlertType, ConfigError, Severity

YAML = """\
endpoints:
  - name: ops
    url: https://hooks.example.com/agentwatch
    secret_env: AW_TEST_HOOK_SECRET
    timeout_s: 2.5
    filters:
      severities: [critical]
      types: [runaway_loop, cost]
  - name: team-slack
    url: http://127.0.0.1:9999/slack
    secret: s3cr3t
    format: slack
    link_template: https://grafana.example/d/aw?var-tenant={tenant_id}&var-agent={agent_id}
    filters:
      tenants: [acme]
      agents: [agent-a]
      rules: [session_cost]
"""

TOML = """\
[[endpoints]]
name = "ops"
url = "https://hooks.example.com/agentwatch"
secret_env = "AW_TEST_HOOK_SECRET"
timeout_s = 2.5

[endpoints.filters]
severities = ["critical"]
types = ["runaway_loop", "cost"]

[[endpoints]]
name = "team-slack"
url = "http://127.0.0.1:9999/slack"
secret = "s3cr3t"
format = "slack"
link_template = "https://grafana.example/d/aw?var-tenant={tenant_id}&var-agent={agent_id}"

[endpoints.filters]
tenants = ["acme"]
agents = ["agent-a"]
rules = ["session_cost"]
"""


@pytest.fixture(autouse=True)
def _hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AW_TEST_HOOK_SECRET", "from-env")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text"), [("hooks.yaml", YAML), ("hooks.toml", TOML)])
def test_valid_files_load_the_same(tmp_path: Path, name: str, text: str) -> None:
    ops, slack = load_endpoints(write(tmp_path, name, text))
    assert ops.name == "ops"
    assert ops.secret == "from-env"
    assert ops.secret_env == "AW_TEST_HOOK_SECRET"
    assert ops.format == "json"
    assert ops.timeout_s == 2.5
    assert ops.link_template is None
    assert ops.filters.severities == [Severity.CRITICAL]
    assert ops.filters.types == [AlertType.RUNAWAY_LOOP, AlertType.COST]
    assert ops.filters.rules is None
    assert slack.secret == "s3cr3t"
    assert slack.secret_env is None
    assert slack.format == "slack"
    assert slack.timeout_s == 5.0
    assert slack.link_template is not None
    assert slack.filters.agents == ["agent-a"]


def test_yml_suffix_and_empty_list(tmp_path: Path) -> None:
    assert load_endpoints(write(tmp_path, "e.yml", "endpoints: []\n")) == []


def test_secret_is_not_in_the_repr(tmp_path: Path) -> None:
    _, slack = load_endpoints(write(tmp_path, "e.yaml", YAML))
    assert "s3cr3t" not in repr(slack)


def test_webhook_endpoint_carries_the_delivery_settings(tmp_path: Path) -> None:
    ops, _ = load_endpoints(write(tmp_path, "e.yaml", YAML))
    endpoint = ops.webhook_endpoint()
    assert isinstance(endpoint, WebhookEndpoint)
    assert (endpoint.name, endpoint.url, endpoint.secret, endpoint.timeout_s) == (
        "ops",
        "https://hooks.example.com/agentwatch",
        "from-env",
        2.5,
    )


def one(**overrides: Any) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"name": "e", "url": "https://h.example/x", "secret": "s"}
    endpoint.update(overrides)
    return {"endpoints": [{k: v for k, v in endpoint.items() if v is not ...}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (one(url="ftp://h.example/x"), "`endpoints[0].url`: must be http:// or https://"),
        (one(url="https:///nohost"), "`endpoints[0].url`: must be http:// or https://"),
        (one(url="https://h.example:99999/"), "`endpoints[0].url`: bad port"),
        (one(url="https://h.example/a b"), "`endpoints[0].url`: must be ASCII without spaces"),
        (one(url=5), "`endpoints[0].url`: Input should be a valid string"),
        (one(secret=...), "`endpoints[0].secret`: missing"),
        (
            one(secret_env="AW_TEST_HOOK_SECRET"),  # noqa: S106
            "`endpoints[0].secret, secret_env`: give one",
        ),
        (
            one(secret=..., secret_env="AW_TEST_UNSET_VAR"),  # noqa: S106
            "`endpoints[0].secret_env`: environment variable AW_TEST_UNSET_VAR is not set",
        ),
        (one(secret=..., secret_env=""), "`endpoints[0].secret_env`: expected the name"),
        (one(secret=""), "`endpoints[0].secret`: String should have at least 1 character"),
        (one(secrets=["a"]), "`endpoints[0].secret, secrets`: give one of them, not several"),
        (one(secret=..., secrets=[]), "`endpoints[0].secrets`: an empty list; give at least one"),
        (one(secret=..., secrets="new"), "`endpoints[0].secrets`: expected a list (got str)"),
        (
            one(secret=..., secrets=["new", "old", "new"]),
            "`endpoints[0].secrets[2]`: listed twice (also secrets[0])",
        ),
        (
            one(secret=..., secrets=["new", ""]),
            "`endpoints[0].secrets[1]`: String should have at least 1 character",
        ),
        (
            one(secret=..., secrets=["new", 5]),
            "`endpoints[0].secrets[1]`: Input should be a valid string",
        ),
        (
            one(secret=..., secrets=[f"s{i}" for i in range(6)]),
            "`endpoints[0].secrets`: 6 entries; at most 5",
        ),
        (
            one(secret=..., secrets_env=["AW_TEST_HOOK_SECRET", "AW_TEST_UNSET_VAR"]),
            "`endpoints[0].secrets_env[1]`: environment variable AW_TEST_UNSET_VAR is not set",
        ),
        (
            one(secret=..., secret_env="AW_TEST_HOOK_SECRET", secrets_env=["AW_TEST_HOOK_SECRET"]),  # noqa: S106
            "`endpoints[0].secret_env, secrets_env`: give one of them, not several",
        ),
        (one(allow_private="yes"), "`endpoints[0].allow_private`: Input should be a valid boolean"),
        (one(name=""), "`endpoints[0].name`: String should have at least 1 character"),
        (one(name=...), "`endpoints[0].name`: missing"),
        (
            one(format="xml"),
            "`endpoints[0].format`: Input should be 'json', 'slack' or 'pagerduty'",
        ),
        (one(timeout_s=0), "`endpoints[0].timeout_s`: Input should be greater than 0"),
        (one(timeout_s=61), "`endpoints[0].timeout_s`: Input should be less than or equal to 60"),
        (one(timeout_s="5"), "`endpoints[0].timeout_s`: Input should be a valid number"),
        (one(colour="red"), "`endpoints[0].colour`: unknown key"),
        (one(filters={"teams": ["x"]}), "`endpoints[0].filters.teams`: unknown key"),
        (
            one(filters={"severities": ["urgent"]}),
            "`endpoints[0].filters.severities[0]`: Input should be 'info', 'warning' or 'critical'",
        ),
        (one(filters={"types": []}), "`endpoints[0].filters.types`: an empty list matches nothing"),
        (
            one(filters={"tenants": "acme"}),
            "`endpoints[0].filters.tenants`: Input should be a valid list",
        ),
        (
            one(format="slack", link_template="https://g/{tenant}"),
            "`endpoints[0].link_template`: unknown placeholder {tenant}",
        ),
        (
            one(format="slack", link_template="https://g/{value:.2f}"),
            "`endpoints[0].link_template`: placeholder {value}: conversions and format specs",
        ),
        (
            one(format="slack", link_template="https://g/{tenant_id.__class__}"),
            "`endpoints[0].link_template`: unknown placeholder",
        ),
        (
            one(format="slack", link_template="https://g/{"),
            "`endpoints[0].link_template`: bad placeholder syntax",
        ),
        (
            one(format="slack", link_template="https://g/{}"),
            "`endpoints[0].link_template`: placeholders must name an alert field",
        ),
        (
            one(format="slack", link_template="javascript:alert(1)"),
            "`endpoints[0].link_template`: must start with http:// or https://",
        ),
        (
            one(link_template="https://g/{tenant_id}"),
            "`endpoints[0].link_template`: only used with `format: slack`",
        ),
        (
            {"endpoints": [one(name="a")["endpoints"][0], one(name="a")["endpoints"][0]]},
            "`endpoints[1].name`: duplicate endpoint name 'a' (also endpoints[0])",
        ),
        ({}, "`endpoints`: missing"),
        ({"endpoints": [], "extra": 1}, "`extra`: unknown key"),
        ({"endpoints": {"a": {}}}, "`endpoints`: Input should be a valid list"),
        ([1, 2], "expected a mapping with an `endpoints` list at the top level, got list"),
    ],
)
def test_errors_name_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        endpoints_from_mapping(data, source="hooks.yaml")
    assert str(info.value).startswith("hooks.yaml: ")
    assert message in str(info.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", '[[endpoints]]\nname = "a"\nurl = "https://h/"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: `endpoints\[0\]\.secret`: missing"):
        load_endpoints(bad)
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_endpoints(write(tmp_path, "broken.toml", "endpoints = [\n"))
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_endpoints(write(tmp_path, "broken.yaml", "endpoints: [\n"))
    with pytest.raises(ConfigError, match=r"unknown endpoints file type '\.ini'"):
        load_endpoints(write(tmp_path, "e.ini", ""))
    with pytest.raises(ConfigError, match="cannot read endpoints file"):
        load_endpoints(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"empty\.yaml: expected a mapping .* got NoneType"):
        load_endpoints(write(tmp_path, "empty.yaml", ""))


def endpoint_with(filters: dict[str, Any]) -> EndpointConfig:
    return endpoints_from_mapping(one(filters=filters))[0]


@pytest.mark.parametrize(
    ("filters", "alert_overrides", "expected"),
    [
        ({}, {}, True),
        ({}, {"agent_id": None, "session_id": None}, True),
        ({"rules": ["session_cost"]}, {}, True),
        ({"rules": ["loop_repeat"]}, {}, False),
        ({"types": ["cost"]}, {}, True),
        ({"types": ["runaway_loop", "error_rate"]}, {}, False),
        ({"severities": ["warning", "critical"]}, {}, True),
        ({"severities": ["critical"]}, {}, False),
        ({"tenants": ["acme"]}, {}, True),
        ({"tenants": ["globex"]}, {}, False),
        ({"agents": ["agent-a", "agent-b"]}, {}, True),
        ({"agents": ["agent-b"]}, {}, False),
        ({"agents": ["agent-a"]}, {"agent_id": None, "session_id": None}, False),
        ({"tenants": ["acme"], "severities": ["warning"], "rules": ["session_cost"]}, {}, True),
        ({"tenants": ["acme"], "severities": ["critical"]}, {}, False),
        ({"severities": ["critical"]}, {"severity": Severity.CRITICAL}, True),
    ],
)
def test_filters_match_when_every_given_list_contains_the_value(
    make_alert: Callable[..., Alert],
    filters: dict[str, Any],
    alert_overrides: dict[str, Any],
    expected: bool,
) -> None:
    alert = make_alert(**alert_overrides)
    endpoint = endpoint_with(filters)
    assert endpoint.matches(alert) is expected
    assert endpoint.filters.matches(alert) is expected


def test_secrets_lists_every_signing_secret_in_order() -> None:
    (config,) = endpoints_from_mapping(one(secret=..., secrets=["new", "old"]))
    assert (config.secret, config.secrets) == ("new", ["new", "old"])
    assert config.webhook_endpoint().secret == ("new", "old")


def test_one_secret_stays_one_secret() -> None:
    (config,) = endpoints_from_mapping(one())
    assert (config.secret, config.secrets) == ("s", ["s"])
    assert config.webhook_endpoint().secret == "s"


def test_secrets_env_reads_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AW_TEST_NEW", "new-from-env")
    monkeypatch.setenv("AW_TEST_OLD", "old-from-env")
    (config,) = endpoints_from_mapping(
        one(secret=..., secrets_env=["AW_TEST_NEW", "AW_TEST_OLD"])
    )
    assert config.secrets == ["new-from-env", "old-from-env"]
    assert config.secrets_env == ["AW_TEST_NEW", "AW_TEST_OLD"]


def test_secrets_are_not_in_the_repr() -> None:
    (config,) = endpoints_from_mapping(one(secret=..., secrets=["n3w-s3cret", "0ld-s3cret"]))
    assert "s3cret" not in repr(config)


def test_rotation_in_a_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rotate.toml",
        '[[endpoints]]\nname = "a"\nurl = "https://h.example/"\nsecrets = ["new", "old"]\n',
    )
    (config,) = load_endpoints(path)
    assert config.webhook_endpoint().secret == ("new", "old")
