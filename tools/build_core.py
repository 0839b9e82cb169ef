"""Compile the detection core with mypyc, in place (``make setup`` runs this).

The core (windows, detectors, alert state machine, engine) is plain, strictly typed
Python; mypyc turns it into C extension modules that run the same code about 1.4x as
fast, which is what takes ``agentwatch replay`` past 100,000 events/s on one core. The
worker's two stages (pure too, its hot path) are compiled with it: 1.09x through both
stages (``bench/bench_stages.py --against`` the commit before they were). So are the
producer's background thread's two hot modules (completing and checking each event,
packing records: ``PRODUCER_MODULES``), and the schemas' fast check of the event contract,
each in a build of its own.
Python imports ``_engine.cpython-*.so`` in preference to ``_engine.py`` in the same
folder, so the editable install picks the compiled modules up with no other change.

Without a C compiler (or if mypyc fails) nothing is installed and the pure-Python core
runs: the behaviour is the same, only slower. ``--clean`` removes the compiled modules.
A compiled module older than its source is refused by the test suite (see
``tests/conftest.py``): rebuild with ``make setup``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "stream_processors" / "src"
CORE = SRC / "agentwatch" / "processors" / "core"
MODULES = ("_windows", "_alerting", "_detectors", "_engine", "_budget", "_latency",
           "_scores", "_cycles", "_governance")
WORKER = SRC / "agentwatch" / "processors" / "worker"
#: the worker's two stages (its hot path, pure like the core) and what they forward
WORKER_MODULES = ("_forward", "_session_stage", "_rekeyed_stage")
PRODUCER_SRC = ROOT / "producers" / "src"
PRODUCER = PRODUCER_SRC / "agentwatch" / "producer"
#: the producer's background thread: completing and checking each event, packing records;
#: and the queue ``emit()`` puts each event into (compiled, ``put`` is ~0.2 µs an event
#: less). Built apart: the producer is its own distribution, with its own mypyc runtime
PRODUCER_MODULES = ("_completion", "packing", "_queue")
SCHEMAS_SRC = ROOT / "schemas" / "src"
SCHEMAS = SCHEMAS_SRC / "agentwatch" / "schemas"
#: the contract's fast check (the producer's thread, the worker's and the sink's decoders),
#: built alone: one module, its runtime beside it
SCHEMAS_MODULES = ("fastcheck",)
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def compiled_files() -> list[Path]:
    """Every file this script installs (the core's extension modules and mypyc's runtime)."""
    return [*CORE.glob(f"*{EXT_SUFFIX}"), *WORKER.glob(f"*{EXT_SUFFIX}"),
            *SRC.glob(f"*__mypyc{EXT_SUFFIX}"), *PRODUCER.glob(f"*{EXT_SUFFIX}"),
            *PRODUCER_SRC.glob(f"*__mypyc{EXT_SUFFIX}"), *SCHEMAS.glob(f"*{EXT_SUFFIX}")]


def clean() -> None:
    for path in compiled_files():
        path.unlink()


def build(src: Path, folders: tuple[tuple[Path, tuple[str, ...]], ...]) -> int:
    """Compile ``modules`` of each ``(folder, modules)`` under ``src`` in one mypyc build and
    install them in place (a failure leaves them pure Python). mypyc builds in the working
    directory and copies each module to its path there: build from a copy of the source
    tree, then install only the extension modules; the build's runtime goes in ``src``
    (of a one-module build, it lies beside the module)."""
    mypy_paths = ":".join(str(ROOT / p / "src") for p in ("schemas", "stream_processors"))
    packages = [folder.relative_to(src) for folder, _ in folders]
    with tempfile.TemporaryDirectory(prefix="agentwatch-mypyc-") as tmp:
        work = Path(tmp)
        config = work / "mypy.ini"
        config.write_text(
            "[mypy]\nstrict = True\nnamespace_packages = True\nexplicit_package_bases = True\n"
            f"mypy_path = {mypy_paths}\nplugins = pydantic.mypy\n"
            "[mypy-yaml.*]\nignore_missing_imports = True\n"
        )
        shutil.copytree(src / "agentwatch", work / "agentwatch")
        sources = [f"{package}/{m}.py" for package, (_, modules) in zip(packages, folders,
                                                                         strict=True)
                   for m in modules]
        mypyc = Path(sys.executable).with_name("mypyc")
        done = subprocess.run(  # noqa: S603 -- our venv's mypyc on our own sources
            [str(mypyc), "--config-file", str(config), *sources],
            cwd=work, capture_output=True, text=True, check=False,
        )
        names = ", ".join(Path(source).stem for source in sources)
        if done.returncode != 0:
            print(f"build_core: mypyc failed on {names}; they run as pure Python.\n"
                  f"{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        for package, (folder, _) in zip(packages, folders, strict=True):
            for built in (work / package).glob(f"*{EXT_SUFFIX}"):
                shutil.copy2(built, folder / built.name)
        for runtime in work.glob(f"*__mypyc{EXT_SUFFIX}"):
            shutil.copy2(runtime, src / runtime.name)
    print(f"build_core: compiled {names} with mypyc", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--clean"]:
        clean()
        sys.exit(0)
    clean()
    # the producer and the schemas are distributions of their own: a build (and a mypyc
    # runtime) each. The three run at once (each is a mypyc process, then one compiler
    # process at a time): the two small ones take ~45 s together, beside the core's ~65 s,
    # on a machine with a core to spare.
    builds = [(SRC, ((CORE, MODULES), (WORKER, WORKER_MODULES))),
              (PRODUCER_SRC, ((PRODUCER, PRODUCER_MODULES),)),
              (SCHEMAS_SRC, ((SCHEMAS, SCHEMAS_MODULES),))]
    with ThreadPoolExecutor(max_workers=len(builds)) as pool:
        failed = list(pool.map(lambda args: build(*args), builds))
    sys.exit(max(failed))
