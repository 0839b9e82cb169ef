"""A delivery that finally failed: the record of the ``agentwatch.alerts.dlq`` topic (a wire
contract: the alert service writes it, the sink stores it; JSON Schema ``delivery_failure``).

When every attempt to deliver one alert state change to one endpoint has failed (or a
final answer such as HTTP 400 came back), the dispatcher produces one
:class:`DeliveryFailure` to the dead-letter topic, keyed by ``alert_id``::

    {"alert": {...the alert, as in the webhook body...},
     "endpoint": "team-slack", "delivery_id": "7c0e...", "attempts": 8,
     "status_code": 503, "error": "HTTP 503: upstream unavailable",
     "failed_at": "2026-11-25T09:14:03.120000Z"}

A destination refused because it resolves to a loopback, private, link-local or metadata
address (the endpoint lacks ``allow_private: true``) is recorded the same way, after its
one attempt (it is never retried): ``status_code`` is None and ``error`` says why, e.g.
``destination refused: 127.0.0.1 is a loopback address; endpoint 'ops' does not set
`allow_private: true```.

A PagerDuty ``acknowledge`` (sent when an alert is acknowledged) that finally fails is
recorded the same way with ``"delivery": "acknowledge"``; the ``alert`` is the firing it
acknowledges. The key is left out for an alert's own state change (``"alert"``, the
default), so records read the same as before it existed.

The endpoint's URL is left out on purpose: Slack-style webhook URLs are secrets. The
sink stores each record as a row of the ``alerts`` table whose ``delivery_status`` is
:attr:`DeliveryFailure.delivery_status` (``failed:<endpoint>``) and a ``dead_letters`` row
with the reason, so BI tools see which alerts never reached whom. A failed
``acknowledge`` gets the ``dead_letters`` row only: the alert itself did reach the
endpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from agentwatch.schemas._alert import Alert

__all__ = ["FAILED_PREFIX", "DeliveryFailure", "DeliveryKind"]

#: ``alerts.delivery_status`` of a failed delivery is this prefix and the endpoint name.
FAILED_PREFIX: Final = "failed:"

#: What a delivery carried: the alert's state change, or PagerDuty's ``acknowledge`` of it.
DeliveryKind = Literal["alert", "acknowledge"]


class DeliveryFailure(BaseModel):
    """One alert state change that could not be delivered to one endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert: Alert
    endpoint: Annotated[str, Field(min_length=1)]
    delivery_id: Annotated[str, Field(min_length=1)]
    attempts: Annotated[int, Field(ge=1)]
    status_code: int | None
    """The last HTTP status; None when the last attempt got no HTTP answer."""
    error: str
    failed_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    delivery: DeliveryKind = "alert"
    """``acknowledge``: PagerDuty's ``acknowledge`` of the alert failed, not the alert."""

    @property
    def delivery_status(self) -> str:
        """The ``alerts.delivery_status`` value recording this failure."""
        return f"{FAILED_PREFIX}{self.endpoint}"

    @property
    def reason(self) -> str:
        """One line for logs and the ``dead_letters`` table."""
        what = (
            f"the acknowledge of alert {self.alert.alert_id}"
            if self.delivery == "acknowledge"
            else f"alert {self.alert.alert_id} ({self.alert.state})"
        )
        return (
            f"webhook {self.endpoint}: delivery {self.delivery_id} of {what} failed after "
            f"{self.attempts} attempt(s): {self.error}"
        )

    def encode(self) -> bytes:
        """The dead-letter topic's record value (JSON; ``delivery`` only when it is not
        ``alert``)."""
        exclude = {"delivery"} if self.delivery == "alert" else None
        return self.__pydantic_serializer__.to_json(self, exclude=exclude)

    @classmethod
    def decode(cls, value: bytes | str) -> DeliveryFailure:
        """A record value back; pydantic ValidationError when it is not one."""
        return cls.model_validate_json(value)
