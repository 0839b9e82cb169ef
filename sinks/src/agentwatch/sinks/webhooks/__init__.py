"""Signed alert webhooks: signing, synchronous delivery with retries, a test receiver.

Every alert is POSTed as JSON (:func:`agentwatch.schemas.encode_alert`) with::

    X-Agentwatch-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    X-Agentwatch-Delivery:  <id, the same on every retry: use it as the idempotency key>

A receiver checks the signature over the **raw** body, before parsing it::

    from agentwatch.sinks.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, SignatureError, verify

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
"""

from __future__ import annotations

from agentwatch.sinks.webhooks._receiver import ReceivedDelivery, WebhookReceiver
from agentwatch.sinks.webhooks._sender import DeliveryResult, WebhookEndpoint, deliver
from agentwatch.sinks.webhooks._signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    delivery_id,
    sign,
    verify,
)

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "DeliveryResult",
    "ReceivedDelivery",
    "SignatureError",
    "WebhookEndpoint",
    "WebhookReceiver",
    "deliver",
    "delivery_id",
    "sign",
    "verify",
]
