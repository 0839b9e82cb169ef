"""Webhook endpoints: where alerts go, which ones, and in which format.

An endpoints file (YAML ``.yaml``/``.yml`` or TOML ``.toml``) holds a top-level
``endpoints`` **list** (a list keeps the order and puts the name next to the rest of
the endpoint; names must still be unique)::

    endpoints:
      - name: pagerduty-bridge        # stable: it is part of every delivery id
        url: https://hooks.example.com/agentwatch
        secret_env: AGENTWATCH_HOOK_SECRET   # or secret, secrets or secrets_env (below)
        timeout_s: 5                  # default 5; > 0 and <= 60
        max_attempts: 8               # default 8; then the alert goes to the dead-letter topic
        backoff_initial_s: 0.5        # retries wait rand() * min(backoff_max_s, initial * 2**n)
        backoff_max_s: 30
        concurrency: 4                # requests in flight to this endpoint at once
        filters:                      # every given list must contain the alert's value
          severities: [critical]
          types: [runaway_loop, cost]
      - name: team-slack
        url: https://hooks.slack.com/services/T000/B000/XXXX
        secret: s3cr3t
        format: slack                 # json (default: the alert contract) or slack
        link_template: https://grafana.example/d/agentwatch?var-tenant={tenant_id}&var-agent={agent_id}
        filters:
          tenants: [acme]
        escalate_after_s: 300         # not acknowledged nor resolved within 5 min ...
        escalate_to: oncall-pagerduty # ... -> sent to this endpoint too (once)
      - name: oncall-pagerduty
        url: https://events.pagerduty.com/v2/enqueue
        secret_env: AGENTWATCH_HOOK_SECRET
        format: pagerduty             # an Events API v2 event: trigger / resolve
        routing_key_env: PAGERDUTY_ROUTING_KEY   # or routing_key (never logged)
        filters:
          severities: [critical]      # filters choose what comes directly; an
                                      # escalation arrives whatever they say

or in TOML ``[[endpoints]]`` tables with an ``[endpoints.filters]`` sub-table.

Secrets: exactly one of ``secret`` (one value), ``secret_env`` (one environment
variable), ``secrets`` (a list) or ``secrets_env`` (a list of variables). With a list every
request carries one ``v1`` signature per secret, in the order listed, and a receiver
holding any one of them accepts it: that is how a secret is rotated without a failed
delivery (add the new one next to the old, move every receiver to the new one, then
remove the old one; README "Rotate a signing secret"). At most
:data:`MAX_SECRETS` secrets, each listed once.

Destinations: an endpoint connects only to public addresses; ``allow_private: true`` lets
it reach loopback, private, link-local and metadata addresses (a receiver on this host or
in this network). The check is made at connect time on the address connected to
(:mod:`agentwatch.alerts._destinations`); a refused delivery is not retried and
goes to the dead-letter topic with a reason naming the endpoint and ``allow_private``.

Filters: ``rules``, ``types``, ``severities``, ``tenants``, ``agents`` (matched against
``agent_id``; an alert without one never matches a given ``agents`` list). A key left
out matches everything; an empty list is an error (it would match nothing).
Escalation: ``escalate_after_s`` (> 0) and ``escalate_to`` (another endpoint's name)
go together. A firing this endpoint received that is neither acknowledged nor resolved
``escalate_after_s`` later is sent to ``escalate_to``, and from there on along that
endpoint's own ``escalate_to``, once per level (:mod:`agentwatch.alerts._escalation`).
A chain must end: ``escalate_to`` naming an unknown endpoint, the endpoint itself, or
closing a cycle is an error.

PagerDuty: ``format: pagerduty`` needs ``routing_key`` or ``routing_key_env`` (the
Events v2 integration key; it is kept out of reprs and logs) and takes no other format's
keys; other formats take no routing key.

Every error names the file and the key: ``endpoints.yaml: `endpoints[1].timeout_s`:
Input should be less than or equal to 60 (got 90)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentwatch.alerts._formats import (
    check_link_template,
    json_body,
    pagerduty_body,
    slack_body,
)
from agentwatch.alerts._sender import WebhookEndpoint
from agentwatch.schemas import Alert, AlertType, ConfigError, Severity
from agentwatch.schemas.config_files import read_config_file

__all__ = [
    "EndpointConfig",
    "EndpointFilters",
    "EndpointsFile",
    "endpoints_from_mapping",
    "load_endpoints",
]

_NonEmptyStr = Annotated[str, Field(min_length=1)]
_MAX_ERRORS: Final = 3
MAX_SECRETS: Final = 5
"""Secrets one endpoint may sign with at once (rotation needs two)."""
_SECRET_KEYS: Final = ("secret", "secrets", "secret_env", "secrets_env")


def _non_empty(values: list[Any] | None, what: str) -> None:
    if values is not None and not values:
        raise ValueError(f"{what}: an empty list matches nothing; leave the key out to match all")


class EndpointFilters(BaseModel):
    """Which alerts an endpoint receives: every list given must contain the alert's
    value (rule name, type, severity, tenant id, agent id); a list left out matches all."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    rules: list[_NonEmptyStr] | None = None
    types: list[Annotated[AlertType, Field(strict=False)]] | None = None
    severities: list[Annotated[Severity, Field(strict=False)]] | None = None
    tenants: list[_NonEmptyStr] | None = None
    agents: list[_NonEmptyStr] | None = None

    @model_validator(mode="after")
    def _no_empty_lists(self) -> Self:
        for name in ("rules", "types", "severities", "tenants", "agents"):
            _non_empty(getattr(self, name), name)
        return self

    def matches(self, alert: Alert) -> bool:
        return (
            (self.rules is None or alert.rule in self.rules)
            and (self.types is None or alert.type in self.types)
            and (self.severities is None or alert.severity in self.severities)
            and (self.tenants is None or alert.tenant_id in self.tenants)
            and (
                self.agents is None
                or (alert.agent_id is not None and alert.agent_id in self.agents)
            )
        )


def _env_secret(key: str, var: object) -> str:
    if not isinstance(var, str) or not var:
        raise ValueError(f"{key}: expected the name of an environment variable (got {var!r})")
    value = os.environ.get(var)
    if not value:
        raise ValueError(f"{key}: environment variable {var} is not set or empty")
    return value


def _secrets_from(data: dict[str, Any]) -> list[Any]:
    """The signing secrets an endpoint's mapping names (module docstring, "Secrets")."""
    given = [k for k in _SECRET_KEYS if k in data]
    if len(given) > 1:
        raise ValueError(f"{', '.join(given)}: give one of them, not several")
    if not given:
        raise ValueError(
            "secret: missing; every endpoint is signed: give `secret`, `secrets`, "
            "`secret_env` or `secrets_env`"
        )
    key = given[0]
    value = data[key]
    if key == "secret":
        return [value]
    if key == "secret_env":
        return [_env_secret(key, value)]
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list (got {type(value).__name__})")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    if not value:
        raise ValueError(f"{key}: an empty list; give at least one")
    if len(value) > MAX_SECRETS:
        raise ValueError(f"{key}: {len(value)} entries; at most {MAX_SECRETS}")
    for index, item in enumerate(value):
        if item in value[:index]:
            raise ValueError(f"{key}[{index}]: listed twice (also {key}[{value.index(item)}])")
    if key == "secrets_env":
        return [_env_secret(f"{key}[{i}]", var) for i, var in enumerate(value)]
    return list(value)


class EndpointConfig(BaseModel):
    """One webhook endpoint. After loading, ``secrets`` holds every signing secret (one
    ``v1`` each, in order) and ``secret`` the first of them, whichever of ``secret``,
    ``secrets``, ``secret_env`` or ``secrets_env`` named them (the ``*_env`` key is kept to
    say where they came from)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: _NonEmptyStr
    url: str
    # both filled by _resolve_secret from whichever key names the secrets (the defaults
    # are never used; they let Python callers give only one of the keys)
    secret: _NonEmptyStr = Field(default="", repr=False)
    secrets: Annotated[list[_NonEmptyStr], Field(min_length=1, max_length=MAX_SECRETS)] = Field(
        default_factory=list, repr=False
    )
    secret_env: _NonEmptyStr | None = None
    secrets_env: list[_NonEmptyStr] | None = None
    allow_private: bool = False
    """Let the endpoint reach loopback, private, link-local and metadata addresses."""
    format: Literal["json", "slack", "pagerduty"] = "json"
    routing_key: _NonEmptyStr | None = Field(default=None, repr=False)
    """PagerDuty Events v2 integration key (``format: pagerduty``); filled from
    ``routing_key_env`` when that is given."""
    routing_key_env: _NonEmptyStr | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
    filters: EndpointFilters = Field(default_factory=EndpointFilters)
    link_template: str | None = None
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    """Attempts per alert before it goes to the dead-letter topic."""
    backoff_initial_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 0.5
    backoff_max_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 30.0
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    """Requests in flight to this endpoint at once (its own sending threads)."""
    escalate_after_s: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] | None = None
    """Unacknowledged and unresolved this long after its firing: escalate (with
    ``escalate_to``)."""
    escalate_to: _NonEmptyStr | None = None
    """The endpoint an unacknowledged firing goes to next."""

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        secrets = _secrets_from(data)
        out = {**data, "secret": secrets[0], "secrets": secrets}
        if "routing_key_env" in data:
            if "routing_key" in data:
                raise ValueError("routing_key, routing_key_env: give one of them, not both")
            out["routing_key"] = _env_secret("routing_key_env", data["routing_key_env"])
        return out

    @field_validator("url", mode="after")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError("url: must be ASCII without spaces")
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("url: must be http:// or https:// with a host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"url: bad port ({exc})") from None
        return url

    @field_validator("link_template", mode="after")
    @classmethod
    def _check_link_template(cls, template: str | None) -> str | None:
        if template is not None:
            try:
                check_link_template(template)
            except ValueError as exc:
                raise ValueError(f"link_template: {exc}") from None
        return template

    @model_validator(mode="after")
    def _link_needs_slack(self) -> Self:
        if self.link_template is not None and self.format != "slack":
            raise ValueError(
                "link_template: only used with `format: slack` (the json body is the alert itself)"
            )
        return self

    @model_validator(mode="after")
    def _routing_key_for_pagerduty(self) -> Self:
        if self.format == "pagerduty" and self.routing_key is None:
            raise ValueError(
                "routing_key: missing; `format: pagerduty` needs `routing_key` or "
                "`routing_key_env` (the Events v2 integration key)"
            )
        if self.format != "pagerduty" and self.routing_key is not None:
            raise ValueError("routing_key: only used with `format: pagerduty`")
        return self

    @model_validator(mode="after")
    def _escalation_pair(self) -> Self:
        if (self.escalate_after_s is None) != (self.escalate_to is None):
            given, missing = (
                ("escalate_after_s", "escalate_to")
                if self.escalate_to is None
                else ("escalate_to", "escalate_after_s")
            )
            raise ValueError(f"{missing}: missing; `{given}` needs `{missing}` too")
        if self.escalate_to is not None and self.escalate_to == self.name:
            raise ValueError(f"escalate_to: {self.name!r} escalates to itself")
        return self

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s: {self.backoff_initial_s} is more than backoff_max_s "
                f"({self.backoff_max_s})"
            )
        return self

    def matches(self, alert: Alert) -> bool:
        """Whether this endpoint wants ``alert`` (see :class:`EndpointFilters`)."""
        return self.filters.matches(alert)

    def webhook_endpoint(self) -> WebhookEndpoint:
        """The delivery settings for :func:`~agentwatch.alerts.deliver` /
        :func:`post_once`."""
        return WebhookEndpoint(
            name=self.name,
            url=self.url,
            secret=self.secret if len(self.secrets) == 1 else tuple(self.secrets),
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            allow_private=self.allow_private,
        )

    def body(self, alert: Alert, ack_url: str | None = None) -> bytes:
        """The request body for ``alert`` in this endpoint's format (with an
        acknowledgement link when ``ack_url`` is given)."""
        if self.format == "slack":
            return slack_body(alert, link_template=self.link_template, ack_url=ack_url)
        if self.format == "pagerduty":
            return pagerduty_body(alert, self.routing_key or "", ack_url=ack_url)
        return json_body(alert, ack_url=ack_url)


class EndpointsFile(BaseModel):
    """The whole endpoints file."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    endpoints: list[EndpointConfig]

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: dict[str, int] = {}
        for index, endpoint in enumerate(self.endpoints):
            if endpoint.name in seen:
                raise ValueError(
                    f"endpoints[{index}].name: duplicate endpoint name {endpoint.name!r} "
                    f"(also endpoints[{seen[endpoint.name]}])"
                )
            seen[endpoint.name] = index
        check_escalations(self.endpoints)
        return self


def check_escalations(endpoints: list[EndpointConfig]) -> None:
    """ValueError naming the key unless every ``escalate_to`` names another endpoint of
    ``endpoints`` and every chain ends (no cycle)."""
    index = {e.name: i for i, e in enumerate(endpoints)}
    for i, endpoint in enumerate(endpoints):
        target = endpoint.escalate_to
        if target is None:
            continue
        if target not in index:
            raise ValueError(
                f"endpoints[{i}].escalate_to: no endpoint is named {target!r} "
                f"(names: {', '.join(sorted(index))})"
            )
        chain = [endpoint.name]
        while target is not None:
            if target in chain:
                raise ValueError(
                    f"endpoints[{i}].escalate_to: the chain {' -> '.join([*chain, target])} "
                    "is a cycle; a chain must end"
                )
            chain.append(target)
            target = endpoints[index[target]].escalate_to


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:_MAX_ERRORS]:
        loc = tuple(p for p in err["loc"] if p not in {"str", "float", "int"})
        key = _key(loc)
        if err["type"] == "extra_forbidden":
            parts.append(f"`{key}`: unknown key")
        elif err["type"] == "missing":
            parts.append(f"`{key}`: missing")
        elif err["type"] == "value_error":
            # our validators say "<key>: <why>"; <key> is relative to the error's location
            msg = str(err["msg"]).removeprefix("Value error, ")
            sub, _, why = msg.partition(": ")
            if not why:
                parts.append(f"`{key}`: {msg}")
            elif not loc:
                parts.append(f"`{sub}`: {why}")
            elif key.rsplit(".", 1)[-1] == sub:  # a field validator: loc names the key
                parts.append(f"`{key}`: {why}")
            else:
                parts.append(f"`{key}.{sub}`: {why}")
        else:
            parts.append(f"`{key}`: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def endpoints_from_mapping(data: Any, *, source: str = "endpoints") -> list[EndpointConfig]:
    """Validate parsed file content. Raises ConfigError naming ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with an `endpoints` list at the top level, "
            f"got {type(data).__name__}"
        )
    try:
        return EndpointsFile.model_validate(data).endpoints
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_endpoints(path: str | Path) -> list[EndpointConfig]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) endpoints file (module docstring).
    ``secret_env`` variables are read now. Raises ConfigError naming the file and key."""
    file = Path(path)
    data = read_config_file(file, "endpoints")
    return endpoints_from_mapping(data, source=str(file))
