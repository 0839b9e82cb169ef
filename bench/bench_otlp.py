"""otlp: GenAI spans/s into Kafka through `agentwatch otlp` (OTLP/HTTP protobuf, as an
OpenTelemetry SDK's BatchSpanProcessor sends them: 512 spans per request), against our
producer emitting the same events in-process (the OpenTelemetry Collector publishes no
throughput figure for an OTLP-in, Kafka-out pipeline of this kind, so the peer is the path
the receiver adds a hop to), measured in the same run on the same broker.

Workload: ``--spans`` GenAI spans (2 of 3 chat with tokens, 1 of 3 execute_tool with
arguments) over 500 conversations, pre-encoded; ``--clients`` threads POST them on
keep-alive connections, each retrying a 503 (queue full) after its Retry-After, as an
exporter does. The receiver runs as its own process with the producer's defaults. Both
sides are timed from the first send until a consumer has seen every event on the topic
(same consumer code for both). Prints the summary line, then 503 retries and the
receiver's log tail.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import orjson
from _common import summary
from confluent_kafka import Consumer, TopicPartition  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from agentwatch.cli.otlp import genai_span
from agentwatch.producer import Agentwatch
from agentwatch.producer.genai import Skipped, map_span
from bench._kafka import (
    create_topics,
    fresh_name,
    kafka_bootstrap,
    log_tail,
    start_process,
    stop_process,
)

PARTITIONS = 4
CONVERSATIONS = 500
BATCH = 512  # the SDK BatchSpanProcessor's max_export_batch_size
AGENTWATCH = Path(sys.executable).with_name("agentwatch")
LISTENING = re.compile(rb"listening on (http://\S+/v1/traces)")


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_spans(n: int) -> list[Span]:
    t0 = time.time_ns()
    spans = []
    for i in range(n):
        conv = i % CONVERSATIONS
        trace = (conv + 1).to_bytes(16, "big")
        attrs: dict[str, Any] = {"gen_ai.conversation.id": f"conv-{conv}",
                                 "gen_ai.agent.id": f"agent-{conv % 6}"}
        if i % 3 == 2:
            attrs |= {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                      "gen_ai.tool.call.arguments": orjson.dumps({"q": f"item {i % 50}"}).decode()}
            name = "execute_tool search"
        else:
            attrs |= {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                      "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 900 + i % 300,
                      "gen_ai.usage.output_tokens": 40 + i % 60}
            name = "chat gpt-4o-mini"
        start = t0 + i * 1000
        spans.append(Span(
            trace_id=trace, span_id=(i + 1).to_bytes(8, "big"), name=name,
            start_time_unix_nano=start, end_time_unix_nano=start + 250_000_000,
            attributes=[_kv(k, v) for k, v in attrs.items()]))
    return spans


def encode_requests(spans: list[Span]) -> list[bytes]:
    resource = Resource(attributes=[_kv("service.name", "bench-agents")])
    out = []
    for i in range(0, len(spans), BATCH):
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=resource, scope_spans=[ScopeSpans(spans=spans[i:i + BATCH])])])
        out.append(request.SerializeToString())
    return out


class EventCounter(threading.Thread):
    """Counts the events on ``topic`` (every partition, from the start) until ``expected``;
    ``done_at`` is the monotonic time it saw the last one."""

    def __init__(self, bootstrap: str, topic: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.expected, self.seen, self.done_at = expected, 0, 0.0
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": fresh_name("c"),
                                   "enable.auto.commit": False, "log_level": 3})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

    def run(self) -> None:
        deadline = time.monotonic() + 600
        try:
            while self.seen < self.expected and time.monotonic() < deadline:
                for message in self._consumer.consume(1000, timeout=0.05):
                    if message.error() is None:
                        value = orjson.loads(message.value())
                        self.seen += len(value) if isinstance(value, list) else 1
            self.done_at = time.monotonic()
        finally:
            self._consumer.close()


def post_all(url: str, bodies: list[bytes], clients: int) -> int:
    """POST every body (split among ``clients`` threads); returns the 503 retries."""
    parts = urllib.parse.urlsplit(url)
    retries = [0] * clients

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        try:
            for body in bodies[k::clients]:
                while True:
                    conn.request("POST", parts.path, body,
                                 {"Content-Type": "application/x-protobuf"})
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        break
                    if response.status != 503:
                        raise RuntimeError(f"receiver answered {response.status}")
                    retries[k] += 1
                    time.sleep(float(response.headers.get("Retry-After", "1")))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(retries)


def run_ours(bootstrap: str, bodies: list[bytes], n: int, clients: int,
             workdir: Path) -> tuple[float, int, str]:
    topic = fresh_name("bench-otlp")
    create_topics(bootstrap, [topic], PARTITIONS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTWATCH_")}
    env |= {"AGENTWATCH_TOPIC": topic}
    log = workdir / "otlp.log"
    proc, _ = start_process([str(AGENTWATCH), "otlp", "--port", "0", "--bootstrap-servers",
                             bootstrap], env, log)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            match = LISTENING.search(log.read_bytes())
            url = match.group(1).decode() if match else None
            time.sleep(0.05)
        if url is None:
            raise RuntimeError(f"agentwatch otlp did not start:\n{log_tail(log)}")
        post_all(url, bodies[:2], 1)  # warm-up: connection to Kafka, partition count
        counter = EventCounter(bootstrap, topic, n + min(2, len(bodies)) * BATCH)
        counter.start()
        t0 = time.monotonic()
        retries = post_all(url, bodies, clients)
        counter.join()
        if counter.seen < counter.expected:
            raise RuntimeError(f"only {counter.seen} of {counter.expected} events arrived")
        return n / (counter.done_at - t0), retries, log_tail(log, 3)
    finally:
        stop_process(proc)


def run_peer(bootstrap: str, spans: list[Span], n: int) -> float:
    topic = fresh_name("bench-otlp-peer")
    create_topics(bootstrap, [topic], PARTITIONS)
    resource = {"service.name": "bench-agents"}
    events = []
    for span in spans:
        event = map_span(genai_span(span, resource))
        assert not isinstance(event, Skipped)
        events.append(event)
    with Agentwatch(bootstrap_servers=bootstrap, topic=topic, queue_size=n + 1) as client:
        client.emit(dict(events[0]) | {"event_id": None})  # warm-up
        client.flush(30)
        counter = EventCounter(bootstrap, topic, n + 1)
        counter.start()
        t0 = time.monotonic()
        emit = client.emit
        for event in events:
            emit(event)
        client.flush(120)
        counter.join()
    if counter.seen < counter.expected:
        raise RuntimeError(f"peer: only {counter.seen} of {counter.expected} events arrived")
    return n / (counter.done_at - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    spans = make_spans(args.spans)
    bodies = encode_requests(spans)
    workdir = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    with kafka_bootstrap() as bootstrap:
        ours, retries, tail = run_ours(bootstrap, bodies, args.spans, args.clients, workdir)
        peer = run_peer(bootstrap, spans, args.spans)
    summary("otlp", "spans_per_s_into_kafka", ours, peer, higher_is_better=True)
    print(f"otlp: {len(bodies)} requests of up to {BATCH} spans from {args.clients} clients, "
          f"{retries} answered 503 and retried", flush=True)
    print(tail, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
