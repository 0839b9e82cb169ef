"""Runs ``agentwatch webhooks`` (the CLI, as users do) as a process for the integration
tests, with its endpoints file written from Python dicts."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from sink_harness import ServiceProcess

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def write_endpoints(path: Path, endpoints: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"endpoints": endpoints}, sort_keys=False))
    return path


class DispatcherProcess(ServiceProcess):
    """``python -m agentwatch.cli webhooks --endpoints FILE`` with its settings in the
    environment; output goes to ``log_path``."""

    def __init__(self, bootstrap: str, *, alerts_topic: str, dlq_topic: str, group: str,
                 endpoints_file: Path, log_path: Path, drain_s: float = 10.0,
                 extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        super().__init__(
            [sys.executable, "-m", "agentwatch.cli", "webhooks", "--endpoints",
             str(endpoints_file)],
            env | {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "AGENTWATCH_ALERTS_TOPIC": alerts_topic,
                "AGENTWATCH_ALERTS_DLQ_TOPIC": dlq_topic,
                "AGENTWATCH_WEBHOOKS_GROUP": group,
                "AGENTWATCH_WEBHOOKS_DRAIN_S": str(drain_s),
            } | (extra_env or {}),
            log_path,
        )
