"""producer: sustained events/s from one process to the real broker through
`agentwatch.producer` (emit() -> packed records -> aiokafka, acks=all, idempotence), against
confluent-kafka producing the same event payloads one per record (acks=all, idempotence,
keyed per session), measured in the same run on the same broker (issue 4: goal >= 100,000
events/s and a ratio >= 0.5).

Both sides: 200,000 events of 500 sessions (``_common.synthetic_events``), clock from the
first send to the end of the final flush (every event acknowledged by the broker). Ours
runs with its defaults (zstd, 50 ms linger, packed records); the broker is warmed up
first, then the sides alternate for ``--rounds`` rounds and each side's best counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import orjson
from _common import summary, synthetic_events
from confluent_kafka import Producer

from agentwatch.producer import Agentwatch
from bench._kafka import create_topics, fresh_name, kafka_bootstrap


def ours(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> float:
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic, agent_id="bench",
                        queue_size=len(events) + 1)
    start = time.perf_counter()
    for event in events:
        client.emit(event)
    if not client.flush(timeout_s=300):
        raise SystemExit("producer: FAILED: our flush timed out")
    elapsed = time.perf_counter() - start
    stats = client.stats
    client.close()
    if stats.sent != len(events):
        raise SystemExit(f"producer: FAILED: sent {stats.sent} of {len(events)}: {stats}")
    print(f"producer: ours {stats.records:,} records for {stats.sent:,} events "
          f"({stats.sent / max(stats.records, 1):.1f} events/record)", file=sys.stderr)
    return len(events) / elapsed


def peer(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    start = time.perf_counter()
    for i, event in enumerate(events):
        key = f"default/{event['session_id']}".encode()
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), key)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        raise SystemExit("producer: FAILED: confluent-kafka flush left messages")
    return len(events) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    events = [orjson.loads(line) for line in synthetic_events(args.events)]
    for event in events:  # let the producer fill ids, time, agent and tenant like an agent
        for field in ("event_id", "ts", "agent_id"):
            event.pop(field, None)
    with kafka_bootstrap() as bootstrap:
        # A fresh broker JVM is slow for its first few hundred thousand records: warm it up
        # first, then run the two sides alternately, twice each, and keep each side's best.
        warm = fresh_name("bench-warmup")
        create_topics(bootstrap, [warm], 4)
        peer(bootstrap, warm, events)
        peer_rates, ours_rates = [], []
        for _ in range(args.rounds):
            ours_topic, peer_topic = fresh_name("bench-producer"), fresh_name("bench-peer")
            create_topics(bootstrap, [ours_topic, peer_topic], 4)
            peer_rates.append(peer(bootstrap, peer_topic, events))
            ours_rates.append(ours(bootstrap, ours_topic, events))
        print(f"producer: rounds ours {[round(r) for r in ours_rates]}, "
              f"confluent-kafka {[round(r) for r in peer_rates]}", file=sys.stderr)
        peer_rate, ours_rate = max(peer_rates), max(ours_rates)
    print(f"producer: {args.events:,} events of 500 sessions, 4 partitions; ours "
          f"{ours_rate:,.0f}/s, confluent-kafka {peer_rate:,.0f}/s", file=sys.stderr)
    summary("producer", "events_per_s", ours_rate, peer_rate, higher_is_better=True)


if __name__ == "__main__":
    main()
