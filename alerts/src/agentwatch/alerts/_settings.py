"""How ``agentwatch webhooks`` (the alert dispatcher) runs: :class:`WebhooksSettings`.

From environment variables (:data:`WEBHOOKS_ENV_VARS`), overridable by CLI options,
through the one loader :func:`agentwatch.schemas.settings.load`; errors name the
variable or option a bad value came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.schemas.kafka_security import KafkaSecurity
from agentwatch.schemas.settings import (
    ACKS_TOPIC,
    ALERTS_DLQ_TOPIC,
    ALERTS_TOPIC,
    DEFAULT_BOOTSTRAP_SERVERS,
    SettingError,
    load,
)

if TYPE_CHECKING:
    from agentwatch.alerts._acks import AckLinks

__all__ = ["WEBHOOKS_ENV_VARS", "WebhooksSettings"]


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    """The Kafka side of ``agentwatch webhooks`` (the alert dispatcher).

    ``endpoints_file`` is the endpoints file (see :mod:`agentwatch.alerts`).
    At most ``max_in_flight`` alerts are held undelivered (waiting, being sent or
    between retries) before the dispatcher stops reading; ``drain_s`` is how long a stop
    waits for deliveries under way before it commits and leaves them to the next run.

    Acknowledgements are read from (and the link server writes them to) ``acks_topic``,
    a compacted topic keyed by alert id. ``ack_listen`` (``HOST:PORT``; empty = off, the
    default) serves the signed acknowledgement links, which are then put in every
    firing's body; ``ack_base_url`` is the address people reach that server at (default
    ``http://<ack_listen>``), ``ack_ttl_s`` how long a link stays valid.
    """

    endpoints_file: str = ""
    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    alerts_topic: str = ALERTS_TOPIC
    dlq_topic: str = ALERTS_DLQ_TOPIC
    group_id: str = "agentwatch-webhooks"
    max_in_flight: int = 10_000
    drain_s: float = 10.0
    max_backoff_s: float = 30.0
    """Longest wait between two attempts to reach Kafka."""
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """TLS/SASL of the dispatcher's Kafka clients (:mod:`agentwatch.schemas.kafka_security`)."""
    metrics_port: int = 0
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port; 0: off."""
    acks_topic: str = ACKS_TOPIC
    ack_listen: str = ""
    ack_base_url: str = ""
    ack_ttl_s: int = 86_400

    def __post_init__(self) -> None:
        if not self.acks_topic:
            raise SettingError("acks_topic", "must not be empty")
        if self.acks_topic in {self.alerts_topic, self.dlq_topic}:
            raise SettingError("acks_topic", f"{self.acks_topic!r} is already another topic")
        if self.ack_ttl_s < 1:
            raise SettingError("ack_ttl_s", f"{self.ack_ttl_s} is not >= 1")
        if self.ack_listen:
            from agentwatch.alerts._acks import parse_listen  # noqa: PLC0415

            try:
                parse_listen(self.ack_listen)
            except ValueError as exc:
                raise SettingError("ack_listen", str(exc).partition(": ")[2]) from None
        if self.ack_base_url:
            if not self.ack_listen:
                raise SettingError("ack_base_url", "set, but ack_listen is not (links are off)")
            if not self.ack_base_url.startswith(("http://", "https://")):
                raise SettingError(
                    "ack_base_url", f"{self.ack_base_url!r} is not an http(s):// URL"
                )
        if not self.endpoints_file:
            raise ConfigError(
                "no endpoints file: set AGENTWATCH_WEBHOOKS_FILE or pass --endpoints FILE"
            )
        if self.max_in_flight < 1:
            raise SettingError("max_in_flight", f"{self.max_in_flight} is not >= 1")
        if not self.drain_s >= 0:
            raise SettingError("drain_s", f"{self.drain_s} is not >= 0")
        if not self.max_backoff_s > 0:
            raise SettingError("max_backoff_s", f"{self.max_backoff_s} is not > 0")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingError("metrics_port", f"{self.metrics_port} is not a port "
                                "(0..65535; 0: off)")
        if not self.alerts_topic or not self.dlq_topic:
            raise ConfigError("alerts_topic and dlq_topic must not be empty")
        if self.alerts_topic == self.dlq_topic:
            raise ConfigError(f"alerts_topic and dlq_topic are the same ({self.dlq_topic!r})")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> WebhooksSettings:
        settings = load(cls, WEBHOOKS_ENV_VARS, env, overrides)
        return dataclasses.replace(settings, kafka_security=KafkaSecurity.from_env(env))

    def ack_links(self) -> AckLinks | None:
        """The links to put in firings' bodies; None while ``ack_listen`` is off."""
        if not self.ack_listen:
            return None
        from agentwatch.alerts._acks import AckLinks  # noqa: PLC0415

        return AckLinks(self.ack_base_url or f"http://{self.ack_listen}", self.ack_ttl_s)


WEBHOOKS_ENV_VARS: Final[dict[str, str]] = {
    "endpoints_file": "AGENTWATCH_WEBHOOKS_FILE",
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "alerts_topic": "AGENTWATCH_ALERTS_TOPIC",
    "dlq_topic": "AGENTWATCH_ALERTS_DLQ_TOPIC",
    "group_id": "AGENTWATCH_WEBHOOKS_GROUP",
    "max_in_flight": "AGENTWATCH_WEBHOOKS_MAX_IN_FLIGHT",
    "drain_s": "AGENTWATCH_WEBHOOKS_DRAIN_S",
    "max_backoff_s": "AGENTWATCH_WEBHOOKS_MAX_BACKOFF_S",
    "metrics_port": "AGENTWATCH_WEBHOOKS_METRICS_PORT",
    "acks_topic": "AGENTWATCH_ACKS_TOPIC",
    "ack_listen": "AGENTWATCH_ACK_LISTEN",
    "ack_base_url": "AGENTWATCH_ACK_BASE_URL",
    "ack_ttl_s": "AGENTWATCH_ACK_TTL_S",
}
