"""The fault matrix (issue 16, item 4): ``make faults``.

Each row starts a fresh pipeline on a real broker (Kafka KRaft from the integration
tests' cached jars): ``agentwatch worker``, ``agentwatch sink`` (chDB),
``agentwatch webhooks`` and a webhook receiver on 127.0.0.1; runs a paced fleet through
the project's producer in a process of its own (:mod:`bench.faults._agent`); injects one
fault; waits until everything is caught up; then counts what reached ClickHouse and the
webhook receiver against what the producer accepted and what ``replay`` of the same
events gives. See :mod:`bench.faults._matrix` for the rows and what each figure means.
"""
