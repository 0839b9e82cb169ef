"""The rules fingerprint a worker stores with its state is the same in every process."""

from __future__ import annotations

import os
import subprocess
import sys

from agentwatch.processors.core import RulesConfig, rules_from_mapping
from agentwatch.processors.worker._session_stage import config_fingerprint

_PRINT = (
    "from agentwatch.processors.core import RulesConfig\n"
    "from agentwatch.processors.worker._session_stage import config_fingerprint\n"
    "print(config_fingerprint(RulesConfig.default()))\n"
)


def test_the_fingerprint_does_not_depend_on_string_hashing() -> None:
    """Rules hold sets (``kinds``) whose order depends on PYTHONHASHSEED: a restarted worker
    that computed another fingerprint would drop all of its state."""
    prints = {
        subprocess.run([sys.executable, "-c", _PRINT], check=True, capture_output=True,
                       text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(6)
    }
    assert prints == {config_fingerprint(RulesConfig.default()) + "\n"}


def test_the_fingerprint_changes_with_the_rules() -> None:
    other = rules_from_mapping({"rules": {"session_cost": {"threshold_usd": 2}}})
    assert config_fingerprint(other) != config_fingerprint(RulesConfig.default())
