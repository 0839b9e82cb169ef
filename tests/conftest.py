"""Suite-wide guard: never test a stale compiled core (or worker stage).

``make setup`` compiles the detection core with mypyc in place (tools/build_core.py);
Python then imports the compiled modules instead of the .py files beside them. If a
source changed after that, the tests would run old code: stop with a clear message.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

_PROCESSORS = Path(__file__).resolve().parents[1] / "stream_processors/src/agentwatch/processors"
_ROOT = Path(__file__).resolve().parents[1]
#: what tools/build_core.py compiles: the core, the worker's two stages, the producer's
#: background thread's hot modules, the schemas' fast check
_COMPILED_DIRS = (_PROCESSORS / "core", _PROCESSORS / "worker",
                  _ROOT / "producers/src/agentwatch/producer",
                  _ROOT / "schemas/src/agentwatch/schemas")
_EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = [
        ext.name for folder in _COMPILED_DIRS for ext in folder.glob(f"*{_EXT_SUFFIX}")
        if (src := ext.with_name(ext.name.removesuffix(_EXT_SUFFIX) + ".py")).exists()
        and src.stat().st_mtime > ext.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"the compiled core is older than its source ({', '.join(sorted(stale))}): "
            "run `make setup` to rebuild it, or `python tools/build_core.py --clean` to "
            "test the pure-Python core",
            returncode=4,
        )
