"""``stages=split``: one worker command, two processes (two cores).

This process runs the session stage; a child process runs the agent/tenant (rekeyed)
stage, with the same settings, ``stages=rekeyed`` and a data directory of its own. The
two only talk through Kafka (the rekeyed topic), exactly as the stages of one process
do. The child dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and a SIGTERM when
the parent stops); if it exits on its own it is started again after a pause.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from agentwatch.processors.worker._settings import ENV_VARS, WorkerSettings
from agentwatch.schemas.backoff import sleep

__all__ = ["rekeyed_child"]

log = logging.getLogger("agentwatch.worker")

_RESTART_PAUSE_S = 2.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(settings: WorkerSettings) -> dict[str, str]:
    """The environment of the rekeyed-stage process: every setting of this one."""
    child = dataclasses.replace(settings, stages="rekeyed",
                                data_dir=settings.data_dir / "rekeyed-stage",
                                metrics_port=settings.metrics_port and settings.metrics_port + 1)
    env = dict(os.environ)
    for name, var in ENV_VARS.items():
        value = getattr(child, name)
        if value is None:
            env.pop(var, None)
        else:
            env[var] = str(value)
    return env


@contextlib.contextmanager
def rekeyed_child(settings: WorkerSettings, loglevel: str) -> Iterator[None]:
    """Keep a rekeyed-stage process running for as long as the block runs."""
    command = [sys.executable, "-m", "agentwatch.cli", "worker", "--loglevel", loglevel]
    env = child_env(settings)
    Path(env["AGENTWATCH_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()
    state: dict[str, subprocess.Popen[bytes]] = {}

    def keep_running() -> None:
        while not stopping.is_set():
            proc = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509, S603 -- our own CLI; the hook only sets the parent-death signal
            state["proc"] = proc
            log.info("agentwatch worker: rekeyed stage running in process %d", proc.pid)
            code = proc.wait()
            if not stopping.is_set():
                log.error("agentwatch worker: the rekeyed stage process exited (%s); "
                          "starting it again in %.0f s", code, _RESTART_PAUSE_S)
                # a fixed pause (each exit is logged as an error); a stop ends it at once
                sleep(_RESTART_PAUSE_S, stopping)

    watcher = threading.Thread(target=keep_running, name="agentwatch-rekeyed-stage",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stopping.set()
        proc = state.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        watcher.join(5)
