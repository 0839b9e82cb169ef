"""producer: sustained events/s from one process to the real broker through
`agentwatch.producer` with its default settings (emit() -> partition batches, one record per
partition per 50 ms linger interval, zstd -> aiokafka, acks=all, idempotence), against
confluent-kafka producing the same event payloads one per record (acks=all, idempotence,
keyed per session, murmur2), measured in the same run on the same broker (issue 15: goal
>= 150,000 events/s and a ratio >= 0.7).

Both sides: 200,000 events of 500 sessions (``_common.synthetic_events``), clock from the
first send to the end of the final flush (every event acknowledged by the broker). Ours
changes one setting: ``queue_size`` holds the whole burst (a flat-out burst of 200,000
events would otherwise overflow the default 10,000 and be dropped, by design). The
broker is warmed up first, then the sides alternate for ``--rounds`` rounds and each
side's best counts. Besides the summary line it prints, for ours, the events per record,
and (Linux) the CPU time per event of each of its threads: the agent's (emit()), the
producer's (completing, checking, packing) and aiokafka's (compressing, sending); they
share one interpreter lock, so their sum bounds the rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import orjson
from _common import summary, synthetic_events
from confluent_kafka import Producer  # type: ignore[import-untyped]

from agentwatch.producer import Agentwatch
from bench._kafka import create_topics, fresh_name, kafka_bootstrap

PARTITIONS = 4
SESSIONS = 500


@dataclass
class Ours:
    rate: float
    records: int
    events: int
    cpu_us: dict[str, float]  # CPU µs per event, by thread


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by each live thread of this process (Linux; else empty)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[thread.name] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def ours(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> Ours:
    client = Agentwatch(bootstrap_servers=bootstrap, topic=topic, agent_id="bench",
                        queue_size=len(events) + 1)
    client.start()  # its threads exist before the clock starts, to be measured
    before = _thread_cpu_s()
    start = time.perf_counter()
    for event in events:
        client.emit(event)
    if not client.flush(timeout_s=300):
        raise SystemExit("producer: FAILED: our flush timed out")
    elapsed = time.perf_counter() - start
    after = _thread_cpu_s()
    stats = client.stats
    client.close()
    if stats.sent != len(events):
        raise SystemExit(f"producer: FAILED: sent {stats.sent} of {len(events)}: {stats}")
    cpu_us = {name: (after[name] - before.get(name, 0.0)) / len(events) * 1e6
              for name in after}
    return Ours(len(events) / elapsed, stats.records, stats.sent, cpu_us)


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
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = [orjson.loads(line) for line in synthetic_events(args.events, sessions=SESSIONS)]
    for event in events:  # let the producer fill ids, time, agent and tenant like an agent
        for field in ("event_id", "ts", "agent_id"):
            event.pop(field, None)
    with kafka_bootstrap() as bootstrap:
        # A fresh broker JVM is slow for its first few hundred thousand records: warm it up
        # first, then run the two sides alternately and keep each side's best.
        warm = fresh_name("bench-warmup")
        create_topics(bootstrap, [warm], PARTITIONS)
        peer(bootstrap, warm, events)
        peer_rates: list[float] = []
        runs: list[Ours] = []
        for _ in range(args.rounds):
            ours_topic, peer_topic = fresh_name("bench-producer"), fresh_name("bench-peer")
            create_topics(bootstrap, [ours_topic, peer_topic], PARTITIONS)
            peer_rates.append(peer(bootstrap, peer_topic, events))
            runs.append(ours(bootstrap, ours_topic, events))
    best = max(runs, key=lambda run: run.rate)
    peer_rate = max(peer_rates)
    print(f"producer: rounds ours {[round(r.rate) for r in runs]}, "
          f"confluent-kafka {[round(r) for r in peer_rates]}", file=sys.stderr)
    print(f"producer: ours {best.records:,} records for {best.events:,} events "
          f"({best.events / max(best.records, 1):.1f} events per record: partition batches "
          f"of {PARTITIONS} partitions, bounded by max_batch_events)", file=sys.stderr)
    if best.cpu_us:
        threads = ", ".join(f"{name} {us:.2f}" for name, us in sorted(best.cpu_us.items()))
        print(f"producer: ours CPU µs per event by thread: {threads} "
              f"(sum {sum(best.cpu_us.values()):.2f}; {os.cpu_count()} CPUs, shared with the "
              "broker)", file=sys.stderr)
    print(f"producer: {args.events:,} events of {SESSIONS} sessions, {PARTITIONS} partitions; "
          f"ours {best.rate:,.0f}/s, confluent-kafka {peer_rate:,.0f}/s", file=sys.stderr)
    summary("producer", "events/s", best.rate, peer_rate, higher_is_better=True)


if __name__ == "__main__":
    main()
