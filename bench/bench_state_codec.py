"""state_codec: what a checkpoint of the worker's session state costs, this tree against an
earlier revision's state format, on the same events in the same run (no Kafka).

The fleet workload (``bench/_fleet.py``: 5,000 open sessions, 20,000 events/s of event time,
a runaway loop every 3,000 events) goes through the detection core as the worker's session
stage runs it (session-scoped rules, timers on the watermark); every second of event time
(the worker's default ``checkpoint_interval_s``) the sessions touched since the last one
are dumped as the session stage writes them (``Engine.dump_key(key, max_ids=16)`` in the
value ``{"o": offset, "k": state}``, the key ``[partition, tenant, session]``). Printed:

* ``state_codec_bytes`` -- changelog bytes per event as the broker would store them:
  each checkpoint's keys and values compressed with zstd (level 3, Kafka's default) in
  512 KiB batches (the worker's ``producer_max_batch_size``); uncompressed bytes too;
* ``state_codec_dump`` -- µs per dirty session to dump and encode its value (best of the
  turns);
* ``state_codec_load`` -- µs per session to decode and load the last checkpoint's
  values into a fresh engine (a worker's restore; best of the turns);
* ``state_codec_packed``, ``state_codec_pack``, ``state_codec_unpack`` -- bytes per session
  the engine keeps for a session idle for ``pack_idle_sessions_s`` (packed), and µs to pack
  it and to unpack it (its next event), over the sessions open at the end (best of the
  turns; only when the other revision packs sessions too).

Both trees run in child processes, taking turns (the machine is shared and noisy); the
other revision's sources are unpacked from git (``_common.export_compiled_revision``) and its core
compiled with mypyc as ``make setup`` does. Ratios > 1: this tree is better.

    .venv/bin/python bench/bench_state_codec.py [--events 200000] [--against 4e47128]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` as a namespace package

from bench._common import completed, export_compiled_revision, summary

CHILD = "--child"
#: the last revision whose session state is the dict form (before format 2)
DICT_FORM_REVISION = "4e47128"
BATCH_BYTES = 512 * 1024  # the worker's producer_max_batch_size
DEDUP_IDS_KEPT = 16  # as the session stage dumps
TIMES = ("dump_us", "load_us", "pack_us", "unpack_us")  # best of the turns
PARTITION = 0


def child(n_events: int) -> None:
    """Measure with whatever ``agentwatch`` is first on the path; print one JSON line."""
    import zstandard  # noqa: PLC0415

    from agentwatch.processors.core import (  # noqa: PLC0415
        ADVANCE_STEP_US,
        COMPILED,
        Engine,
        RulesConfig,
    )
    from agentwatch.schemas import (  # noqa: PLC0415
        AlertScope,
        decode_record,
        default_price_table,
        to_us,
    )
    from bench._fleet import fleet_events  # noqa: PLC0415

    prices = default_price_table()
    config = RulesConfig.default()
    values = [orjson.dumps(completed(raw, prices)) for raw in fleet_events(n_events)]
    engine = Engine(config, scopes=[AlertScope.SESSION], prices=prices)
    zstd = zstandard.ZstdCompressor(level=3)
    dirty: set[tuple[str, ...]] = set()
    raw_bytes = zstd_bytes = writes = 0
    dump_s = 0.0
    table: dict[bytes, bytes] = {}

    def checkpoint(offset: int) -> None:
        nonlocal raw_bytes, zstd_bytes, writes, dump_s
        keys = dirty | engine.touched
        engine.touched.clear()
        dirty.clear()
        batch: list[bytes] = []
        t0 = time.perf_counter()
        for key in keys:
            data = engine.dump_key(key, max_ids=DEDUP_IDS_KEPT)
            value = orjson.dumps({"o": offset} if data is None else {"o": offset, "k": data})
            table_key = orjson.dumps([PARTITION, *key])
            batch += (table_key, value)
            if data is not None:
                table[table_key] = value
            else:
                table.pop(table_key, None)
        dump_s += time.perf_counter() - t0
        writes += len(keys)
        blob = b"".join(batch)
        raw_bytes += len(blob)
        for i in range(0, len(blob), BATCH_BYTES):
            zstd_bytes += len(zstd.compress(blob[i:i + BATCH_BYTES]))

    disorder_us = config.disorder_us
    next_advance_us = next_checkpoint_us = -(1 << 62)
    for offset, value in enumerate(values):
        event = decode_record(value).events[0]
        ts_us = to_us(event.ts)
        if ts_us >= next_checkpoint_us:
            if next_checkpoint_us > -(1 << 62):
                checkpoint(offset)
            next_checkpoint_us = ts_us + 1_000_000
        engine.process(event, ts_us)
        dirty.add((event.tenant_id, event.session_id))
        if ts_us >= next_advance_us:
            engine.advance(ts_us - disorder_us)
            next_advance_us = ts_us + ADVANCE_STEP_US
    checkpoint(len(values))

    load_s = time_restore(Engine(config, scopes=[AlertScope.SESSION], prices=prices), table)
    print(orjson.dumps({
        **time_packing(engine),
        "compiled": COMPILED, "events": len(values), "writes": writes,
        "raw_per_event": raw_bytes / len(values), "zstd_per_event": zstd_bytes / len(values),
        "dump_us": dump_s / max(1, writes) * 1e6, "load_us": load_s / max(1, len(table)) * 1e6,
        "sessions_loaded": len(table),
    }).decode(), flush=True)


def time_packing(engine: Any) -> dict[str, float]:
    """µs to pack each session the engine holds unpacked at the end (what it does to a
    session idle for ``pack_idle_sessions_s``; the engine's private ``_pack``/``_unpack``,
    which revisions before packing lack: then nothing), bytes per packed session, and µs
    to unpack each again (its next event)."""
    pack, unpack = getattr(engine, "_pack", None), getattr(engine, "_unpack", None)
    if pack is None or unpack is None:
        return {}
    keys = list(engine._sessions)  # private: what the bench measures
    t0 = time.perf_counter()
    for key in keys:
        pack(key)
    pack_s = time.perf_counter() - t0
    packed = engine._packed
    size = sum(len(packed[key]) for key in keys)
    t0 = time.perf_counter()
    for key in keys:
        unpack(key)
    unpack_s = time.perf_counter() - t0
    n = max(1, len(keys))
    return {"pack_us": pack_s / n * 1e6, "unpack_us": unpack_s / n * 1e6,
            "packed_bytes": size / n, "packed_sessions": len(keys)}


def time_restore(engine: Any, table: dict[bytes, bytes]) -> float:
    """Seconds to decode and load ``table`` (the last value of each session) into ``engine``."""
    t0 = time.perf_counter()
    for raw_key, raw_value in table.items():
        key = orjson.loads(raw_key)
        engine.load_key((key[1], key[2]), orjson.loads(raw_value)["k"])
    return time.perf_counter() - t0


def run_child(n_events: int, srcs: list[Path] | None) -> dict[str, Any]:
    env = dict(os.environ)
    if srcs is not None:  # the other revision's packages first on the path
        env["PYTHONPATH"] = os.pathsep.join(map(str, srcs))
    done = subprocess.run(  # noqa: S603 -- this file, argv built here
        [sys.executable, str(Path(__file__).resolve()), CHILD, str(n_events)], env=env,
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"state_codec: FAILED: child exited {done.returncode}\n"
                         f"{done.stderr[-3000:]}")
    out: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--against", default=DICT_FORM_REVISION,
                        help="the git revision to compare with (default: the dict form's)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-codec-") as tmp:
        tree = Path(tmp) / "tree"
        try:
            srcs = export_compiled_revision(args.against, tree)
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
                else str(exc.stderr or "")
            print(f"state_codec: FAILED: git cannot give revision {args.against}: "
                  f"{detail.strip()}", flush=True)
            return 1
        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for _ in range(args.rounds):
            for best, got in ((ours, run_child(args.events, None)),
                              (theirs, run_child(args.events, srcs))):
                for name in TIMES:
                    if name in got:
                        best[name] = min(best.get(name, float("inf")), got[name])
                best.update({k: v for k, v in got.items() if k not in TIMES})
    print(f"state_codec: {ours['events']:,} fleet events, {ours['writes']:,} session writes "
          f"(1 s checkpoints), {ours['sessions_loaded']:,} sessions restored; compiled cores: "
          f"this tree {ours['compiled']}, {args.against} {theirs['compiled']}; best of "
          f"{args.rounds} turns; {os.cpu_count()} cores shared with whatever else runs",
          file=sys.stderr)
    print(f"state_codec: uncompressed bytes per event: ours {ours['raw_per_event']:.1f}, "
          f"{args.against} {theirs['raw_per_event']:.1f}", file=sys.stderr)
    summary("state_codec_bytes", "zstd_bytes_per_event", ours["zstd_per_event"],
            theirs["zstd_per_event"], higher_is_better=False)
    summary("state_codec_dump", "us_per_session", ours["dump_us"], theirs["dump_us"],
            higher_is_better=False)
    summary("state_codec_load", "us_per_session", ours["load_us"], theirs["load_us"],
            higher_is_better=False)
    if "pack_us" in ours and "pack_us" in theirs:
        print(f"state_codec: {ours['packed_sessions']:,} open sessions packed then unpacked "
              f"(an idle session, then its next event)", file=sys.stderr)
        summary("state_codec_packed", "bytes_per_session", ours["packed_bytes"],
                theirs["packed_bytes"], higher_is_better=False)
        summary("state_codec_pack", "us_per_session", ours["pack_us"], theirs["pack_us"],
                higher_is_better=False)
        summary("state_codec_unpack", "us_per_session", ours["unpack_us"],
                theirs["unpack_us"], higher_is_better=False)
    else:
        print(f"state_codec: packing not measured ({args.against} has no packed sessions)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(int(sys.argv[2]))
    else:
        sys.exit(main())
