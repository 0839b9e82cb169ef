# agentwatch — the two commands are `make demo` and `make test`; both set up from scratch.
# Needs only python3 (3.11+) and make: uv is installed into .tools/ from PyPI, then
# `uv sync --frozen` builds .venv from the one lock file (uv.lock) for every package.

PYTHON      ?= python3
UV_VERSION  := 0.13.9
TOOLS       := .tools
UV          := $(TOOLS)/bin/uv
VENV        := .venv
STAMP       := $(VENV)/.synced
CORE        := stream_processors/src/agentwatch/processors/core
WORKER      := stream_processors/src/agentwatch/processors/worker
CORE_STAMP  := $(VENV)/.core-compiled
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup demo test lint unit bench faults clean

setup: $(STAMP) $(CORE_STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): $(UV) uv.lock pyproject.toml */pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

# The detection core, the worker's two stages, the producer's hot modules and the schemas'
# fast check compiled with mypyc, in place (pure Python when that is not possible).
$(CORE_STAMP): $(STAMP) tools/build_core.py $(CORE)/_windows.py $(CORE)/_alerting.py $(CORE)/_detectors.py $(CORE)/_engine.py $(CORE)/_budget.py $(CORE)/_latency.py $(CORE)/_scores.py $(CORE)/_cycles.py $(CORE)/_governance.py $(WORKER)/_forward.py $(WORKER)/_session_stage.py $(WORKER)/_rekeyed_stage.py producers/src/agentwatch/producer/_completion.py producers/src/agentwatch/producer/packing.py producers/src/agentwatch/producer/_queue.py schemas/src/agentwatch/schemas/fastcheck.py
	-$(VENV)/bin/python tools/build_core.py
	@touch $@

demo: setup
	$(VENV)/bin/agentwatch demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest tests/unit

test: lint
	$(VENV)/bin/pytest

# Every benchmark runs, even after one fails; then the failed ones are named (exit 1).
bench: setup
	@failed=""; \
	for f in bench/bench_*.py; do \
		echo "== $$f" >&2; \
		$(VENV)/bin/python $$f || failed="$$failed $$f(exit $$?)"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: FAILED:$$failed" >&2; exit 1; fi; \
	echo "bench: all benchmarks ran" >&2

# The fault matrix on a real broker (issue 16): minutes, so not part of `make test`. Prints the
# table ("What survives what" in the README); exits 1 naming the rows that missed the goal.
faults: setup
	$(VENV)/bin/python -m bench.faults $(FAULTS_ARGS)

clean:
	-python3 tools/build_core.py --clean
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
