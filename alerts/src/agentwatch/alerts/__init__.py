"""Signed alert webhooks: signing, synchronous delivery with retries, a test receiver.

Every alert is POSTed as JSON (:func:`agentwatch.schemas.encode_alert`) with::

    X-Agentwatch-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    X-Agentwatch-Delivery:  <id, the same on every retry: use it as the idempotency key>

A receiver checks the signature over the **raw** body, before parsing it::

    from agentwatch.alerts import DELIVERY_HEADER, SIGNATURE_HEADER, SignatureError, verify

    def handle(headers, raw_body: bytes) -> int:
        try:
            verify(WEBHOOK_SECRET, raw_body, headers.get(SIGNATURE_HEADER))
        except SignatureError:
            return 401                      # not from agentwatch, altered, or replayed
        if already_seen(headers.get(DELIVERY_HEADER)):
            return 200                      # a retry of something already handled
        process(json.loads(raw_body))
        return 200                          # any 2xx ends the retries

Answer 5xx, 408 or 429 (optionally with ``Retry-After: <seconds>``) to be retried later;
any other 4xx is final. :func:`deliver` sends one alert to one endpoint;
:class:`WebhookReceiver` is a real local HTTP server for demos and tests.

Which alerts go where, and as what: :func:`load_endpoints` reads an endpoints file
(YAML or TOML) into :class:`EndpointConfig` objects (``matches(alert)``, format
``json`` = :func:`json_body`, ``slack`` = :func:`slack_body` or ``pagerduty`` =
:func:`pagerduty_body`, a PagerDuty Events v2 event). :class:`Dispatcher`
delivers alerts to many endpoints at once (a queue and threads per endpoint, retries,
dead letters as :class:`DeliveryFailure`); :mod:`agentwatch.alerts.kafka` runs it
on Kafka's alerts topic (``agentwatch webhooks``).

Endpoints reach public addresses only: loopback, private, link-local and metadata
addresses are refused at connect time (:class:`DestinationRefusedError`, final, never
retried) unless the endpoint sets ``allow_private`` (``allow_private: true`` in the
file), as a receiver on this host needs. An endpoint may sign with several secrets
while one is rotated (``secrets: [new, old]``).

Escalation and acknowledgement: :class:`Escalator` sends a firing nobody acknowledged
to the next endpoint of its chain (``escalate_after_s`` / ``escalate_to``); an
:class:`Ack` stops it, from ``agentwatch alerts ack`` (the acks topic) or from the
signed link (:class:`AckLinks`) served by :class:`AckServer`.
"""

from __future__ import annotations

from agentwatch.alerts._acks import ACK_PATH, ACKS_TOPIC, Ack, AckLinks, AckServer, parse_listen
from agentwatch.alerts._acks_kafka import write_ack
from agentwatch.alerts._destinations import (
    DestinationRefusedError,
    Resolver,
    refusal_kind,
)
from agentwatch.alerts._dispatcher import Dispatcher, EndpointStats
from agentwatch.alerts._endpoints import (
    EndpointConfig,
    EndpointFilters,
    EndpointsFile,
    check_escalations,
    endpoints_from_mapping,
    load_endpoints,
)
from agentwatch.alerts._escalation import EscalationState, EscalationStats, Escalator
from agentwatch.alerts._formats import (
    ACK_URL_KEY,
    LINK_FIELDS,
    PAGERDUTY_SEVERITY,
    check_link_template,
    json_body,
    pagerduty_acknowledge_body,
    pagerduty_body,
    render_link,
    slack_body,
)
from agentwatch.alerts._receiver import ReceivedDelivery, WebhookReceiver
from agentwatch.alerts._sender import (
    AttemptOutcome,
    DeliveryResult,
    WebhookEndpoint,
    deliver,
    post_once,
)
from agentwatch.alerts._settings import WEBHOOKS_ENV_VARS, WebhooksSettings
from agentwatch.alerts._signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    ack_signature,
    delivery_id,
    sign,
    verify,
    verify_ack,
)
from agentwatch.schemas import FAILED_PREFIX, DeliveryFailure

__all__ = [
    "ACKS_TOPIC",
    "ACK_PATH",
    "ACK_URL_KEY",
    "DELIVERY_HEADER",
    "FAILED_PREFIX",
    "LINK_FIELDS",
    "PAGERDUTY_SEVERITY",
    "SIGNATURE_HEADER",
    "WEBHOOKS_ENV_VARS",
    "Ack",
    "AckLinks",
    "AckServer",
    "AttemptOutcome",
    "DeliveryFailure",
    "DeliveryResult",
    "DestinationRefusedError",
    "Dispatcher",
    "EndpointConfig",
    "EndpointFilters",
    "EndpointStats",
    "EndpointsFile",
    "EscalationState",
    "EscalationStats",
    "Escalator",
    "ReceivedDelivery",
    "Resolver",
    "SignatureError",
    "WebhookEndpoint",
    "WebhookReceiver",
    "WebhooksSettings",
    "ack_signature",
    "check_escalations",
    "check_link_template",
    "deliver",
    "delivery_id",
    "endpoints_from_mapping",
    "json_body",
    "load_endpoints",
    "pagerduty_acknowledge_body",
    "pagerduty_body",
    "parse_listen",
    "post_once",
    "refusal_kind",
    "render_link",
    "sign",
    "slack_body",
    "verify",
    "verify_ack",
    "write_ack",
]
