"""Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` for the long-running services.

One way for every service (worker, sink, webhooks dispatcher, OTLP receiver):

- each service keeps its metrics in a :class:`~prometheus_client.CollectorRegistry` of its
  own (several services can share a process in tests), mostly as *collectors* that read the
  counters the service keeps anyway at scrape time (nothing counted twice, nothing added
  to the hot path);
- :func:`start_metrics_server` serves that registry from a thread on ``port`` (the worker,
  the sink and the dispatcher: ``AGENTWATCH_{WORKER,SINK,WEBHOOKS}_METRICS_PORT``, off when
  unset); the OTLP receiver, an HTTP server already, adds the same three routes to its own
  app with :func:`metrics_body` and :func:`readiness`.

``/healthz`` answers 200 while the process serves. ``/readyz`` answers 200 ``ready`` when
the service's ``ready`` callable returns None, else 503 with the reason it returned.

Needs the ``metrics`` extra (``pip install 'agentwatch-schemas[metrics]'``), which the
service distributions depend on; the producer does not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover -- the service distributions depend on the extra
    raise ImportError("agentwatch.schemas.metrics needs prometheus-client: "
                      "pip install 'agentwatch-schemas[metrics]'") from None

from agentwatch.schemas.errors import ConfigError

__all__ = [
    "CONTENT_TYPE",
    "HEALTH_PATH",
    "METRICS_PATH",
    "READY_PATH",
    "Collector",
    "CollectorRegistry",
    "MetricsServer",
    "Readiness",
    "ServiceMetrics",
    "counter",
    "dead_letter_reason",
    "gauge",
    "highwater_of",
    "metrics_body",
    "readiness",
    "start_metrics_server",
]

log = logging.getLogger("agentwatch.metrics")

METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: None when ready, else why not (the body of the 503)
Readiness = Callable[[], str | None]


def metrics_body(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)


def readiness(ready: Readiness) -> tuple[int, bytes]:
    """``(HTTP status, body)`` of ``/readyz``; a ``ready`` that raises is not ready."""
    try:
        reason = ready()
    except Exception as exc:  # noqa: BLE001 -- a probe answers, it never fails the server
        reason = f"readiness check failed: {exc!r}"
    if reason is None:
        return 200, b"ready\n"
    return 503, reason.encode() + b"\n"


#: (how a dead letter's reason starts, its label): reasons are sentences naming the bad
#: value; the ``reason`` label of the dead-letter counters is one of these few words
_REASONS: Final = (
    ("malformed JSON", "malformed_json"),
    ("record too large", "too_large"),
    ("empty array", "empty_array"),
    ("empty record", "empty_record"),
    ("wrong partition", "wrong_partition"),
    ("field `", "invalid_event"),
)


def dead_letter_reason(reason: str) -> str:
    """The bounded label of a dead letter's ``reason`` text: ``malformed_json``,
    ``too_large``, ``empty_array``, ``empty_record``, ``wrong_partition``,
    ``invalid_event`` (a field fails the event schema), ``not_an_object``,
    ``too_deep``, else ``other``."""
    for prefix, label in _REASONS:
        if reason.startswith(prefix):
            return label
    if reason.startswith("item "):
        if "nested too deeply" in reason:
            return "too_deep"
        if "not an object" in reason:
            return "not_an_object"
    return "other"


def counter(name: str, documentation: str, value: float | None = None, *,
            labels: Iterable[str] = (), samples: Iterable[tuple[Iterable[str], float]] = ()
            ) -> CounterMetricFamily:
    """A counter family for a collector: one ``value``, or ``samples`` of label values."""
    family = CounterMetricFamily(name, documentation, value=value, labels=list(labels) or None)
    for label_values, sample in samples:
        family.add_metric(list(label_values), sample)
    return family


def gauge(name: str, documentation: str, value: float | None = None, *,
          labels: Iterable[str] = (), samples: Iterable[tuple[Iterable[str], float]] = ()
          ) -> GaugeMetricFamily:
    """A gauge family for a collector: one ``value``, or ``samples`` of label values."""
    family = GaugeMetricFamily(name, documentation, value=value, labels=list(labels) or None)
    for label_values, sample in samples:
        family.add_metric(list(label_values), sample)
    return family


def highwater_of(consumer: Any, tp: Any) -> int | None:
    """A Kafka consumer's highwater of ``tp`` (aiokafka, faust), read from the metrics
    thread; None when unknown, or when ``tp`` was revoked in the meantime."""
    try:
        highwater = consumer.highwater(tp)
    except Exception:  # noqa: BLE001 -- a rebalance under way: no figure this scrape
        return None
    return None if highwater is None else int(highwater)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            self._reply(200, metrics_body(self.server.registry), CONTENT_TYPE)
        elif path == HEALTH_PATH:
            self._reply(200, b"ok\n")
        elif path == READY_PATH:
            self._reply(*readiness(self.server.ready))
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _reply(self, status: int, body: bytes,
               content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 ready: Readiness) -> None:
        self.registry = registry
        self.ready = ready
        super().__init__(address, _Handler)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` served from a daemon thread."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="agentwatch-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, port: int, *, ready: Readiness,
                         host: str = "0.0.0.0", setting: str = "metrics_port"  # noqa: S104
                         ) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` (all interfaces by default: Prometheus scrapes
    from another container). ``setting`` names the option in the error when the port is
    taken."""
    try:
        server = _Server((host, port), registry, ready)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    metrics = MetricsServer(server)
    log.info("metrics on http://%s:%d%s (and %s, %s)", host, metrics.port, METRICS_PATH,
             HEALTH_PATH, READY_PATH)
    return metrics


class ServiceMetrics:
    """What the worker's, the sink's and the dispatcher's metrics share: their registry
    served on a port (``port_setting`` names the option in errors) until :meth:`close`.
    Subclasses set ``registry`` and define :meth:`ready`."""

    port_setting: str = "metrics_port"
    registry: CollectorRegistry
    server: MetricsServer | None = None

    def ready(self) -> str | None:
        """None when ready; otherwise why not (the ``/readyz`` answer)."""
        raise NotImplementedError

    def start(self, port: int) -> None:
        self.server = start_metrics_server(self.registry, port, ready=self.ready,
                                           setting=self.port_setting)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
