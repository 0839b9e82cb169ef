"""``agentwatch otlp`` serves ``/metrics``, ``/healthz`` and ``/readyz`` on its own port, on
loopback: the counters after a real SDK export and a bad payload, and every OTLP metric
the pipeline dashboard reads."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_otlp_receiver import (
    SAFETY_TIMEOUT_S,
    Served,
    encode_spans,
    record_genai_spans,
    serve_in_thread,
)

from agentwatch.producer.testing import collector

PIPELINE = Path(__file__).resolve().parents[3] / "deploy/grafana/dashboards/pipeline.json"


@pytest.fixture
def receiver() -> Iterator[Served]:
    yield from serve_in_thread(collector(linger_ms=5))


def get(served: Served, path: str) -> tuple[int, str, str]:
    url = served.url.replace("/v1/traces", path)
    with urllib.request.urlopen(url, timeout=SAFETY_TIMEOUT_S) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, content_type, text = get(served, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_probes_answer_on_the_receiver_port(receiver: Served) -> None:
    served = receiver
    assert get(served, "/healthz")[::2] == (200, "ok\n")
    assert get(served, "/readyz")[::2] == (200, "ready\n")


def test_metrics_count_spans_by_outcome_and_refused_requests(receiver: Served) -> None:
    served = receiver
    status, _, _ = served.post(encode_spans(record_genai_spans()))  # 4 GenAI spans + 1 HTTP
    assert status == 200
    status, _, _ = served.post(b"\xff\xff not protobuf")
    assert status == 400
    assert len(served.events()) == 4  # flushed: the producer delivered them
    m = scrape(served)
    assert m[("agentwatch_otlp_requests_total", ())] == 2
    assert m[("agentwatch_otlp_spans_total", (("outcome", "accepted"),))] == 4
    assert m[("agentwatch_otlp_spans_total", (("outcome", "skipped"),))] == 1
    assert m[("agentwatch_otlp_spans_total", (("outcome", "invalid"),))] == 0
    assert m[("agentwatch_otlp_rejected_requests_total", (("reason", "bad_protobuf"),))] == 1
    assert m[("agentwatch_otlp_producer_sent_total", ())] == 4
    assert m[("agentwatch_otlp_producer_dropped_total", ())] == 0
    # every OTLP metric of the pipeline dashboard is among them
    exprs = [t["expr"] for p in json.loads(PIPELINE.read_text())["panels"] for t in p["targets"]]
    wanted = {n for e in exprs for n in re.findall(r"\bagentwatch_otlp_\w+", e)}
    assert wanted
    assert wanted <= {name for name, _ in m}
