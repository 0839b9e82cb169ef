"""Where a benchmarked process spends its time: py-spy sampling (``--py-spy BIN`` of the
benches that run the worker), summed by component of the worker and by own frame."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

Profiler = tuple[subprocess.Popen[bytes], Path]

#: (component, a substring of a frame that puts a sample in it), first match wins
PROFILE_PARTS = (
    ("checkpoint (state to the changelog, commit)", "checkpoint (processors/worker/"),
    ("rekeyed stage (agent/tenant windows)", "RekeyedStage"),
    ("rekeyed stage (agent/tenant windows)", "rekeyed_agent"),
    ("session stage: decode, checks, forwards", "SessionStage."),
    ("aiokafka (fetch, decompress, send)", "aiokafka/"),
    ("faust / mode (streams, tables, timers)", "faust/"),
    ("faust / mode (streams, tables, timers)", "mode/"),
)


def start_profile(py_spy: str | None, pid: int, tmp: Path, duration_s: float
                  ) -> Profiler | None:
    """Sample ``pid`` (and its children) for ``duration_s``; None when no py-spy was named."""
    if not py_spy:
        return None
    out = tmp / f"py-spy-{pid}.txt"
    proc = subprocess.Popen(  # noqa: S603 -- the py-spy the user named
        [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s))),
         "--rate", "50", "--format", "raw", "--subprocesses", "--nonblocking",
         "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def profile_part(frames: list[str]) -> str:
    if "selectors.py" in frames[-1]:
        return "idle (waiting in epoll)"
    if frames[-1].startswith("SessionStage.process ("):  # mypyc code is invisible to py-spy
        return "session stage: its own lines, with the compiled detection core"
    for part, needle in PROFILE_PARTS:
        if any(needle in f for f in frames):
            return part
    return "other"


def finish_profile(profiler: Profiler | None, log: Callable[[str], None], *,
                   stop_now: bool = False, top: int = 12) -> None:
    """Log where the samples fall (components, and the top own frames), from py-spy's
    collapsed stacks. ``stop_now``: end the sampling here rather than at its duration."""
    if profiler is None:
        return
    proc, out = profiler
    if stop_now and proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if not out.exists():
        log("py-spy: no profile written")
        return
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        parts[profile_part(frames)] += n
        own[frames[-1]] += n
    if not total:
        log("py-spy: no samples")
        return
    log(f"py-spy: {total} samples ({out}); by component: "
        + ", ".join(f"{part} {n / total:.0%}" for part, n in parts.most_common()))
    for frame, n in own.most_common(top):
        log(f"py-spy: self {n / total:5.1%} {frame}")
