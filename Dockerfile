# syntax=docker/dockerfile:1
# The agentwatch image: the `agentwatch` command (worker, sink, db, replay, demo, ...) from
# this repository's uv workspace, with exactly the versions in uv.lock.
#
#   docker build -t agentwatch:local .        (`docker compose up --build` does this)
#   docker run --rm agentwatch:local agentwatch --help
#
# The builder stage installs the workspace into /app/.venv with uv (as `make setup` does)
# and compiles the detection core with mypyc (tools/build_core.py: the same code, about
# 1.4x as fast); it needs a C compiler, the runtime stage does not. If mypyc fails, the
# pure-Python core runs (same results). Compiled modules on the build host never enter
# the image (.dockerignore): they would be built for another Python or be stale.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# The uv the Makefile pins (UV_VERSION there).
ARG UV_VERSION=0.13.9
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /app

# 1. Third-party packages only: this layer is rebuilt when uv.lock or a pyproject changes,
#    not when the code does. uv sync --frozen needs the lock file and the pyproject.toml of
#    the root and of every workspace member. The dev group brings mypy and setuptools for
#    mypyc (step 3); --no-default-groups leaves out the bench group.
COPY pyproject.toml uv.lock ./
COPY schemas/pyproject.toml schemas/
COPY producers/pyproject.toml producers/
COPY stream_processors/pyproject.toml stream_processors/
COPY sinks/pyproject.toml sinks/
COPY alerts/pyproject.toml alerts/
COPY cli/pyproject.toml cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --group dev --no-install-workspace

# 2. The workspace packages (editable installs of /app/<member>/src, as in development).
COPY schemas/ schemas/
COPY producers/ producers/
COPY stream_processors/ stream_processors/
COPY sinks/ sinks/
COPY alerts/ alerts/
COPY cli/ cli/
COPY tools/build_core.py tools/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --group dev

# 3. Compile the detection core in place, then drop the dev tools again (uv sync is exact),
#    byte-compile the sources (the runtime user cannot write __pycache__ under /app) and
#    check that the command starts.
RUN .venv/bin/python tools/build_core.py \
    || echo "build_core: the pure-Python detection core is used"
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups \
    && .venv/bin/python -m compileall -q schemas/src producers/src stream_processors/src \
       sinks/src alerts/src cli/src \
    && .venv/bin/agentwatch --help > /dev/null \
    && .venv/bin/python -c "from agentwatch.processors.core import COMPILED; print('compiled core:', COMPILED)"


FROM ${PYTHON_IMAGE}

RUN useradd --system --user-group --uid 10001 --home-dir /data --no-create-home agentwatch \
    && mkdir -p /data \
    && chown agentwatch:agentwatch /data

# The virtual environment and the sources its editable installs point to, at the same path.
COPY --from=builder /app /app

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGENTWATCH_DATA_DIR=/data

# /data: the worker's local table store (a volume in docker-compose.yml) and the working
# directory, so relative paths (the embedded chDB default, agentwatch-data/) land there.
WORKDIR /data
USER agentwatch
CMD ["agentwatch", "--help"]
