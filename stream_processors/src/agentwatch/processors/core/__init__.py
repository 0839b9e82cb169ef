"""The pure detection core: windows, detectors, alert state machine, engine. No I/O.

``make setup`` compiles it with mypyc (``tools/build_core.py``); :data:`COMPILED` says
whether this process runs the compiled modules or the pure-Python ones (same code).
"""

from agentwatch.processors.core._alerting import SAMPLE_SIZE, AlertTracker, alert_id_for
from agentwatch.processors.core._cycles import LoopCycleDetector
from agentwatch.processors.core._detectors import (
    CostDetector,
    Detector,
    ErrorRateDetector,
    LoopRepeatDetector,
    LoopStepsDetector,
)
from agentwatch.processors.core._driver import ADVANCE_STEP_US, EventTimeDriver
from agentwatch.processors.core._engine import Engine, EngineStats
from agentwatch.processors.core._governance import GuardrailDetector, ToolPolicyDetector
from agentwatch.processors.core._rules import (
    DEFAULT_RULES,
    BudgetRule,
    CostRule,
    ErrorRateRule,
    GuardrailRule,
    LoopCycleRule,
    LoopRepeatRule,
    LoopStepsRule,
    Rule,
    RulesConfig,
    ToolPolicy,
    ToolPolicyRule,
    load_rules,
    rules_from_mapping,
)
from agentwatch.processors.core._spill import SpillFile
from agentwatch.processors.core._windows import ADDED, LATE, REORDERED, SlidingWindow

from agentwatch.processors.core import _engine as _engine_module  # isort: skip

#: True when the core runs as C extension modules built by mypyc
COMPILED: bool = not str(_engine_module.__file__).endswith(".py")

__all__ = [
    "ADDED",
    "ADVANCE_STEP_US",
    "COMPILED",
    "DEFAULT_RULES",
    "LATE",
    "REORDERED",
    "SAMPLE_SIZE",
    "AlertTracker",
    "BudgetRule",
    "CostDetector",
    "CostRule",
    "Detector",
    "Engine",
    "EngineStats",
    "ErrorRateDetector",
    "ErrorRateRule",
    "EventTimeDriver",
    "GuardrailDetector",
    "GuardrailRule",
    "LoopCycleDetector",
    "LoopCycleRule",
    "LoopRepeatDetector",
    "LoopRepeatRule",
    "LoopStepsDetector",
    "LoopStepsRule",
    "Rule",
    "RulesConfig",
    "SlidingWindow",
    "SpillFile",
    "ToolPolicy",
    "ToolPolicyDetector",
    "ToolPolicyRule",
    "alert_id_for",
    "load_rules",
    "rules_from_mapping",
]
