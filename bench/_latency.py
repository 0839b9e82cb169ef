"""Live load for the alert-latency benchmark: the fleet workload (``bench/_fleet.py``)
emitted in real time through ``agentwatch.producer.Agentwatch`` (default settings), with
the wall-clock time of each ``emit()`` as the event's ``ts``.

:func:`emit_live` paces any iterator of event dicts at the arrivals of their own ``ts``
(the fleet's Poisson gaps), then stamps ``ts`` with the wall clock just before the
``emit()``, so the latency of an alert is measured from the ``emit()`` of the event that
triggered it (the alert carries that event's ``ts``). It tells a :class:`LoopLog` about
each repeated tool call of an injected runaway loop (session id ``loop-...``).

:class:`LiveLoad` runs the load in ``generators`` child processes (this file run as a
script), each a share of the rate over its own sessions (its own ``seed``: no session is
in two processes) and its own producer, as several agent processes of one fleet would.
Children print one line per loop call (``L <session> <ts> <epoch_us>``) while they run,
stop when their stdin closes, flush, and print ``R {json}`` (what they emitted, how far
behind schedule, their CPU time).

Also here: CPU seconds per process (``/proc``), the broker's process found by its port,
topics created with broker-side timestamps (``LogAppendTime``).
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from confluent_kafka import KafkaException  # type: ignore[import-untyped]
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[import-untyped]

from bench._fleet import LOOP_PREFIX, fleet_events
from bench._kafka import BenchError

__all__ = [
    "LOOP_REPEATS",
    "LiveLoad",
    "LiveStats",
    "LoopLog",
    "create_log_append_topics",
    "emit_live",
    "listening_pid",
    "live_fleet",
    "machine_busy_s",
    "process_cpu_s",
]

#: the default rule ``runaway loop: repeat`` fires on this many identical tool calls
LOOP_REPEATS: Final = 5
_CHILD: Final = "--generate"


# --- loops seen while emitting ----------------------------------------------------------------


class LoopLog:
    """Every repeated tool call of the injected loops: session -> [(ts, epoch_us)], in
    emit order; thread-safe (children's reader threads and the embedded load add)."""

    def __init__(self) -> None:
        self._calls: dict[str, list[tuple[str, int]]] = {}
        self._lock = threading.Lock()

    def add(self, session: str, ts: str, epoch_us: int) -> None:
        with self._lock:
            self._calls.setdefault(session, []).append((ts, epoch_us))

    def calls(self, session: str) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._calls.get(session, ()))

    def triggers(self, start_s: float, end_s: float) -> dict[str, tuple[str, int]]:
        """Loops whose call number ``LOOP_REPEATS`` (the one the rule fires on) was emitted
        in ``[start_s, end_s)`` of wall clock: session -> (ts, epoch_us) of that call."""
        lo, hi = int(start_s * 1e6), int(end_s * 1e6)
        with self._lock:
            return {s: calls[LOOP_REPEATS - 1] for s, calls in self._calls.items()
                    if len(calls) >= LOOP_REPEATS and lo <= calls[LOOP_REPEATS - 1][1] < hi}


# --- pacing and stamping ----------------------------------------------------------------------


class WallClock:
    """``ts`` of now as the producer writes it (``2026-11-20T09:00:01.250000Z``) and the same
    instant in integer microseconds; the date part formatted once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def stamp(self) -> tuple[str, int]:
        us = time.time_ns() // 1000
        second, micro = divmod(us, 1_000_000)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{micro:06d}Z", us


class _TsParser:
    """Microseconds of a fleet ``ts`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``), seconds cached."""

    __slots__ = ("_head", "_second_us")

    def __init__(self) -> None:
        self._head = ""
        self._second_us = 0

    def us(self, ts: str) -> int:
        head = ts[:19]
        if head != self._head:
            self._head = head
            self._second_us = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) * 10**6
        return self._second_us + int(ts[20:26])


@dataclass
class LiveStats:
    """What one live load did."""

    emitted: int = 0
    elapsed_s: float = 0.0
    #: how late ``emit()`` calls were against the schedule (every 64th sampled), seconds
    late_samples: list[float] = field(default_factory=list)
    behind_at_end_s: float = 0.0
    cpu_s: float = 0.0
    sent: int = 0
    dropped: int = 0  # queue full, failed or invalid: never reached Kafka
    records: int = 0

    @property
    def rate(self) -> float:
        return self.emitted / self.elapsed_s if self.elapsed_s else 0.0

    def late_pct(self, q: float) -> float:
        values = sorted(self.late_samples)
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "elapsed_s": self.elapsed_s,
                "late_p50_s": self.late_pct(0.5), "late_p99_s": self.late_pct(0.99),
                "late_max_s": max(self.late_samples, default=0.0),
                "behind_at_end_s": self.behind_at_end_s, "cpu_s": self.cpu_s,
                "sent": self.sent, "dropped": self.dropped, "records": self.records}


def emit_live(client: Any, events: Iterable[dict[str, Any]], stop: threading.Event,
              on_loop: Callable[[str, str, int], None]) -> LiveStats:
    """Emit ``events`` through ``client`` at the arrivals of their own ``ts`` until
    ``stop`` is set (or the events end); each event's ``ts`` becomes the wall clock of its
    ``emit()``. ``on_loop(session, ts, epoch_us)`` for each loop's repeated tool call."""
    stats = LiveStats()
    clock, parse = WallClock(), _TsParser()
    perf, sleep, emit, stamp = time.perf_counter, time.sleep, client.emit, clock.stamp
    late = stats.late_samples
    first_us = -1
    t0 = perf()
    n = 0
    ahead = 0.0
    for event in events:
        if not n & 255 and stop.is_set():
            break
        due_us = parse.us(event["ts"])
        if first_us < 0:
            first_us, t0 = due_us, perf()
        ahead = t0 + (due_us - first_us) / 1e6 - perf()
        if ahead > 0.001:  # sleep in steps of >= 1 ms (the linger is 50 ms)
            sleep(ahead)
        if not n & 63:
            late.append(max(0.0, -ahead))
        ts, us = stamp()
        event["ts"] = ts
        emit(event)
        n += 1
        session = event["session_id"]
        if session.startswith(LOOP_PREFIX) and event["kind"] == "tool_call":
            on_loop(session, ts, us)
    stats.emitted = n
    stats.elapsed_s = perf() - t0
    stats.behind_at_end_s = max(0.0, -ahead)
    return stats


def live_fleet(rate: float, sessions: int, loop_every: int, seed: int
               ) -> Iterator[dict[str, Any]]:
    """The fleet workload, endless for this purpose (a billion events)."""
    return fleet_events(10**9, sessions=sessions, rate_per_s=rate, loop_every=loop_every,
                        seed=seed)


# --- the generator child ----------------------------------------------------------------------


def generator_main(argv: list[str]) -> None:
    """``--generate --bootstrap B --topic T --rate R --sessions S --loop-every N --seed K``:
    emit until stdin closes, then flush and report (see the module doc)."""
    parser = argparse.ArgumentParser(prog="bench/_latency.py --generate")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--loop-every", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    from agentwatch.producer import Agentwatch  # noqa: PLC0415 -- the measured client

    out = sys.stdout
    out_lock = threading.Lock()
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed it (or died)
        stop.set()

    def on_loop(session: str, ts: str, us: int) -> None:
        with out_lock:
            out.write(f"L {session} {ts} {us}\n")
            out.flush()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    client = Agentwatch(bootstrap_servers=args.bootstrap, topic=args.topic)
    events = live_fleet(args.rate, args.sessions, args.loop_every, args.seed)
    # one event delivered before the clock starts: the client connects, learns metadata
    first = next(events)
    first["ts"] = WallClock().stamp()[0]
    client.emit(first)
    if not client.flush(timeout_s=60):
        print(f"generator: the first event took over 60 s ({client.stats})", file=sys.stderr)
        sys.exit(3)
    with out_lock:
        out.write(f"S {time.time():.6f}\n")
        out.flush()
    cpu0 = _self_cpu_s()
    stats = emit_live(client, events, stop, on_loop)
    client.flush(timeout_s=30)
    client.close()
    stats.cpu_s = _self_cpu_s() - cpu0
    final = client.stats
    stats.sent, stats.records = final.sent, final.records
    stats.dropped = final.dropped + final.failed + final.invalid
    with out_lock:
        out.write("R " + orjson.dumps(stats.to_json()).decode() + "\n")
        out.flush()


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    started_s: float | None = None
    result: dict[str, Any] | None = None
    reader: threading.Thread | None = None


class LiveLoad:
    """``generators`` child processes emitting the fleet at ``rate`` events/s in total
    (each ``rate / generators`` over ``sessions / generators`` open sessions, seed
    ``seed + i``) into ``topic``; loop calls go to :attr:`loops`."""

    def __init__(self, bootstrap: str, topic: str, *, rate: float, sessions: int,
                 loop_every: int, generators: int, seed: int, log_dir: Path) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.rate, self.sessions, self.loop_every = rate, sessions, loop_every
        self.generators, self.seed, self.log_dir = generators, seed, log_dir
        self.loops = LoopLog()
        self.children: list[_Child] = []

    def start(self) -> None:
        for i in range(self.generators):
            log = self.log_dir / f"generator-{i}.log"
            cmd = [sys.executable, str(Path(__file__).resolve()), _CHILD,
                   "--bootstrap", self.bootstrap, "--topic", self.topic,
                   "--rate", str(self.rate / self.generators),
                   "--sessions", str(max(1, self.sessions // self.generators)),
                   "--loop-every", str(self.loop_every), "--seed", str(self.seed + i)]
            with log.open("wb") as err:
                proc = subprocess.Popen(  # noqa: S603 -- this file, argv built here
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            child = _Child(i, proc, log)
            child.reader = threading.Thread(target=self._read, args=(child,),
                                            name=f"generator-{i}", daemon=True)
            child.reader.start()
            self.children.append(child)

    def _read(self, child: _Child) -> None:
        stdout: IO[bytes] | None = child.proc.stdout
        if stdout is None:
            return
        for raw in stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tag, _, rest = line.partition(" ")
            if tag == "L":
                session, ts, us = rest.split(" ")
                self.loops.add(session, ts, int(us))
            elif tag == "S":
                child.started_s = float(rest)
            elif tag == "R":
                child.result = orjson.loads(rest)

    def problem(self) -> str | None:
        """Why the load is not running (a child exited), else None."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None and child.result is None:
                tail = "\n".join(child.log.read_text(errors="replace").splitlines()[-20:])
                return f"generator {child.index} exited ({code}):\n{tail}"
        return None

    def running(self) -> bool:
        """Every child has started emitting."""
        return bool(self.children) and all(c.started_s is not None for c in self.children)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children]

    def kill(self) -> None:
        """End the children that still run (after a failure)."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Close the children's stdin; their reports (flushed, closed), in order."""
        for child in self.children:
            if child.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    child.proc.stdin.close()
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            if child.reader is not None:
                child.reader.join(5)
        missing = [c.index for c in self.children if c.result is None]
        if missing:
            raise BenchError(f"generator(s) {missing} gave no report",
                             "\n".join(c.log.read_text(errors="replace")[-2000:]
                                       for c in self.children))
        return [c.result for c in self.children if c.result is not None]


# --- topics and processes ---------------------------------------------------------------------


def create_log_append_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Topics whose records carry the broker's append time (``LogAppendTime``): the
    legs of a latency are split at the instants the broker stored each record."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions,
                  config={"message.timestamp.type": "LogAppendTime"}) for name in names],
        operation_timeout=30)
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            raise BenchError(f"could not create topic {name}: {exc}") from None


_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its live descendants (``--stages split``
    runs a child)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = found
    total = 0.0
    for p, used in cpu.items():
        q = p
        while q > 1:
            if q == pid:
                total += used
                break
            q = parents.get(q, 0)
    return total


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (the broker), from ``/proc/net/tcp*`` and the
    processes' sockets; None when not found (another user's, or not on this machine)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(fd.readlink()) in wanted:
                        return int(entry.name)
    return None


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        generator_main(sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} {_CHILD} ... (run by bench_alert_latency.py)")
