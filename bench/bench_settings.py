"""settings: what the producer's settings cost with agentwatch's loader
(``agentwatch.schemas.settings.load``) against pydantic-settings, measured in the same run
(issue 20 item 3: "prefer pydantic-settings unless it costs the producer's import time or
its error messages noticeably").

1. Import: ``import agentwatch.producer`` in fresh interpreters, against the same plus
   ``import pydantic_settings`` and a ``BaseSettings`` class with the producer's 18
   settings (median of ROUNDS interpreters each, alternated).
2. Reading the settings, per client: ``ProducerSettings.resolve()`` against that
   ``BaseSettings`` class, with the same variables set.
3. The error message of one bad variable, printed side by side.

pydantic-settings is not a dependency of agentwatch; it is in the lock file through the
bench's quixstreams, so this runs where ``make setup`` has run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import summary

ROUNDS = 7
READS = 2_000

_PEER_CLASS = '''
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

class PeerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTWATCH_", frozen=True,
                                      env_ignore_empty=True)
    tenant_id: str = Field("default", max_length=128)
    agent_id: str = Field("default", max_length=256)
    topic: str = Field("agentwatch.events", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    bootstrap_servers: str | None = None
    queue_size: int = Field(10_000, ge=1, le=10_000_000)
    linger_ms: int = Field(50, ge=0, le=60_000)
    max_batch_events: int = Field(500, ge=1, le=100_000)
    max_batch_bytes: int = Field(512 * 1024, ge=1024, le=8 * 1024 * 1024)
    retry_backoff_ms: int = Field(100, ge=0, le=60_000)
    default_session_id: str | None = Field(None, validation_alias="AGENTWATCH_SESSION_ID")
    compression: str = "auto"
    acks: str = "all"
    enable_idempotence: bool = Field(True, validation_alias="AGENTWATCH_IDEMPOTENCE")
    spool_dir: str | None = None
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20, le=1 << 40)
    control: bool = False
    control_topic: str = "agentwatch.control"
    control_fail_closed: bool = False
'''

_IMPORT_OURS = "import time; t = time.perf_counter(); import agentwatch.producer; " \
               "print(time.perf_counter() - t)"
_IMPORT_PEER = ("import time; t = time.perf_counter(); import agentwatch.producer\n"
                + _PEER_CLASS + "\nprint(time.perf_counter() - t)")

_ENV = {"AGENTWATCH_TENANT_ID": "acme", "AGENTWATCH_AGENT_ID": "bot",
        "AGENTWATCH_LINGER_MS": "20", "AGENTWATCH_IDEMPOTENCE": "on"}


def _import_s(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,  # noqa: S603 (our own code, this interpreter)
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(ROUNDS):  # alternated: a machine that slows down slows both
        ours.append(_import_s(_IMPORT_OURS))
        peer.append(_import_s(_IMPORT_PEER))
    ours_ms, peer_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(peer)
    print(f"import agentwatch.producer: {ours_ms:.1f} ms; with pydantic-settings and the "
          f"producer's settings class: {peer_ms:.1f} ms (+{peer_ms - ours_ms:.1f} ms, "
          f"+{100 * (peer_ms / ours_ms - 1):.0f} %)")
    summary("settings", "import_ms", ours_ms, peer_ms, higher_is_better=False)

    from agentwatch.producer import ProducerSettings  # noqa: PLC0415

    namespace: dict[str, object] = {}
    exec(_PEER_CLASS, namespace)  # noqa: S102 (the peer's class, as in the import run)
    peer_cls = namespace["PeerSettings"]
    os.environ.update(_ENV)
    assert callable(peer_cls)
    t = time.perf_counter()
    for _ in range(READS):
        ProducerSettings.resolve()
    ours_us = 1e6 * (time.perf_counter() - t) / READS
    t = time.perf_counter()
    for _ in range(READS):
        peer_cls()
    peer_us = 1e6 * (time.perf_counter() - t) / READS
    summary("settings", "read_us_per_client", ours_us, peer_us, higher_is_better=False)

    os.environ["AGENTWATCH_LINGER_MS"] = "abc"
    for name, make in (("agentwatch", ProducerSettings.resolve), ("pydantic-settings",
                                                                   peer_cls)):
        try:
            make()
        except ValueError as exc:
            print(f"error ({name}): {exc!s}".replace("\n", " / "))


if __name__ == "__main__":
    main()
