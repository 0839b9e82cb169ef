"""A real single-node Apache Kafka 4.1.1 broker (KRaft, loopback) for the integration tests.

Besides its PLAINTEXT listener the broker serves a SASL_SSL one (SCRAM-SHA-512, user
:data:`SASL_USER`) on ``sasl_port``, with a self-signed certificate for ``localhost`` and
``127.0.0.1`` made once by the JDK's ``keytool`` and cached beside the jars; clients trust it
through ``ca_file`` (PEM).

The jars come from Maven Central through ``kafka/pom.xml`` and are cached outside the work tree,
in ``~/.cache/agentwatch/kafka-4.1.1/lib`` (``AGENTWATCH_KAFKA_CACHE`` overrides the folder that
holds ``lib``). Every failure to provide a broker raises :class:`KafkaUnavailable`, whose
``reason`` is one line fit for a skip message and whose ``detail`` carries logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).parent / "kafka" / "pom.xml"
CACHE_ENV = "AGENTWATCH_KAFKA_CACHE"
MARKER_NAME = ".complete"

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
MAVEN_TIMEOUT_S = 600.0
TOOL_TIMEOUT_S = 60.0
READY_LINE = "Kafka Server started"
LOG_TAIL_LINES = 40
SASL_USER = "agentwatch"
SASL_PASSWORD = "agentwatch-secret"
SASL_MECHANISM = "SCRAM-SHA-512"
_STORE_PASSWORD = "agentwatch-store"  # of the cached PKCS12 keystore (test material only)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class KafkaUnavailable(RuntimeError):  # noqa: N818  (it is a condition, not a bug: tests skip on it)
    """No broker could be provided; ``reason`` is one line, ``detail`` may hold log tails."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "agentwatch" / f"kafka-{KAFKA_VERSION}"


def _one_line(text: str, limit: int = 300) -> str:
    """The first error line of a tool's output (Maven's last ones are only help links)."""
    lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "ERROR" in line or "Exception" in line]
    line = (errors or lines or ["(no output)"])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def ensure_jars(cache: Path | None = None) -> Path:
    """Return the folder of broker jars, resolving them with Maven on first use.

    A file lock serialises parallel runs; a marker (holding the pom's hash) written after a
    successful copy makes later runs skip Maven entirely.
    """
    cache = cache or cache_dir()
    lib = cache / "lib"
    marker = cache / MARKER_NAME
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == pom_hash:
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == pom_hash:
            return lib  # another run finished the download while we waited
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaUnavailable("Kafka jars are not cached and 'mvn' is not on PATH")
        marker.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM),
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={lib}",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaUnavailable(
                f"Maven did not resolve the Kafka jars in {exc.timeout:.0f} s"
            ) from None
        if done.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
            output = done.stdout + done.stderr
            raise KafkaUnavailable(
                f"Maven could not resolve the Kafka jars (offline?): {_one_line(output)}", output
            )
        marker.write_text(pom_hash + "\n")
    return lib


def ensure_tls_material(cache: Path | None = None) -> tuple[Path, Path]:
    """The broker's keystore (PKCS12) and its certificate as PEM (the clients' CA file),
    made by ``keytool`` on first use and cached (valid ten years; a file lock serialises
    parallel runs)."""
    cache = cache or cache_dir()
    tls = cache / "tls"
    keystore, ca_file = tls / "broker.p12", tls / "ca.pem"
    if keystore.is_file() and ca_file.is_file():
        return keystore, ca_file
    tls.mkdir(parents=True, exist_ok=True)
    keytool = shutil.which("keytool")
    if keytool is None:
        raise KafkaUnavailable("'keytool' is not on PATH (it comes with the JDK)")
    with (tls / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if keystore.is_file() and ca_file.is_file():
            return keystore, ca_file
        partial = tls / "broker.p12.partial"
        partial.unlink(missing_ok=True)
        commands = [
            [keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-validity", "3650", "-dname", "CN=localhost",
             "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-keystore", str(partial),
             "-storetype", "PKCS12", "-storepass", _STORE_PASSWORD,
             "-keypass", _STORE_PASSWORD],
            [keytool, "-exportcert", "-alias", "broker", "-rfc", "-keystore", str(partial),
             "-storepass", _STORE_PASSWORD, "-file", str(ca_file)],
        ]  # fmt: skip
        for cmd in commands:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
            )
            if done.returncode != 0:
                output = done.stdout + done.stderr
                raise KafkaUnavailable(f"keytool failed: {_one_line(output)}", output)
        partial.rename(keystore)
    return keystore, ca_file


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class KafkaBroker:
    """One broker+controller process in a scratch dir; ``start()`` blocks until it serves."""

    def __init__(self, lib: Path, java: str) -> None:
        self._lib = lib
        self._java = java
        self._classpath = f"{lib}/*"
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.controller_port = 0
        self.sasl_port = 0
        self._keystore, self.ca_file = ensure_tls_material(lib.parent)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """The SASL_SSL listener (SCRAM-SHA-512, :data:`SASL_USER`, CA ``ca_file``)."""
        return f"localhost:{self.sasl_port}"

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="agentwatch-kafka-"))
        try:
            self._start(self._dir)
        except BaseException:
            self.stop()
            raise

    def _start(self, root: Path) -> None:
        self.port, self.controller_port, self.sasl_port = _free_ports(3)
        props = self._write_config(root)
        cluster_id = self._tool(["random-uuid"]).strip().splitlines()[-1]
        scram = f"{SASL_MECHANISM}=[name={SASL_USER},password={SASL_PASSWORD}]"
        self._tool(["format", "-t", cluster_id, "-c", str(props), "--add-scram", scram])
        self._launch(root)
        self._wait_ready(root)

    def restart(self, down_s: float) -> None:
        """Stop the broker (SIGTERM), wait ``down_s``, start it again on the same ports and
        data: an outage its clients must ride out."""
        self.pause()
        time.sleep(down_s)
        self.resume()

    def pause(self) -> None:
        """Stop the broker process (SIGTERM); ``resume()`` starts it on the same ports and data."""
        assert self._proc is not None
        proc, self._proc = self._proc, None
        self._signal(proc, signal.SIGTERM)
        proc.wait(STOP_TIMEOUT_S)

    def resume(self) -> None:
        assert self._dir is not None
        assert self._proc is None
        log = self._dir / "broker.log"
        seen = log.stat().st_size if log.is_file() else 0
        self._launch(self._dir)
        self._wait_ready(self._dir, after=seen)

    def log_codecs(self, topic: str) -> set[str]:
        """The compression codecs of the record batches stored for ``topic`` (all partitions),
        as Kafka's own DumpLogSegments tool reads them from the data dir."""
        assert self._dir is not None
        segments = sorted(str(p) for p in (self._dir / "data").glob(f"{topic}-*/*.log"))
        cmd = [
            self._java, "-XX:TieredStopAtLevel=1", "-cp", self._classpath,
            "kafka.tools.DumpLogSegments", "--files", ",".join(segments),
        ]  # fmt: skip
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=True
        )
        return set(re.findall(r"compresscodec: (\w+)", done.stdout))

    def _launch(self, root: Path) -> None:
        props = root / "server.properties"
        log4j = root / "log4j2.properties"
        cmd = [
            self._java, "-Xmx512m", "-cp", self._classpath,
            f"-Dlog4j2.configurationFile={log4j}", "kafka.Kafka", str(props),
        ]  # fmt: skip
        with (root / "stdout.log").open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole tree
            )

    def _write_config(self, root: Path) -> Path:
        port, cport, sport = self.port, self.controller_port, self.sasl_port
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport},"
                          f"SASL_SSL://127.0.0.1:{sport}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://localhost:{sport}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"),
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config": scram_login,
            "ssl.keystore.location": str(self._keystore),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": _STORE_PASSWORD,
            "ssl.key.password": _STORE_PASSWORD,
            "log.dirs": str(root / "data"),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "4",
            "auto.create.topics.enable": "true",
        }
        props = root / "server.properties"
        props.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (root / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {root / 'broker.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.raft.name = kafka.server.KafkaRaftServer\n"
            "logger.raft.level = INFO\n"
        )
        return props

    def _tool(self, args: list[str]) -> str:
        # C1 only: these JVMs live about a second, so the optimising compiler never pays off.
        cmd = [
            self._java, "-XX:TieredStopAtLevel=1", "-cp", self._classpath,
            "kafka.tools.StorageTool", *args,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaUnavailable(
                f"StorageTool {args[0]} timed out after {exc.timeout:.0f} s"
            ) from None
        if done.returncode != 0:
            output = done.stdout + done.stderr
            raise KafkaUnavailable(f"StorageTool {args[0]} failed: {_one_line(output)}", output)
        return done.stdout

    def _wait_ready(self, root: Path, *, after: int = 0) -> None:
        """Until the log shows the ready line (past byte ``after``) and the port is open."""
        assert self._proc is not None
        log = root / "broker.log"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise KafkaUnavailable(
                    f"Kafka broker exited with code {code} during start-up", self._logs(root)
                )
            ready_line = log.is_file() and READY_LINE in _read_from(log, after)
            if ready_line and _port_open(self.port):
                return
            time.sleep(0.1)
        raise KafkaUnavailable(
            f"Kafka broker did not become ready within {READY_TIMEOUT_S:.0f} s", self._logs(root)
        )

    @staticmethod
    def _logs(root: Path) -> str:
        return (
            f"--- tail of broker.log ---\n{_tail(root / 'broker.log')}\n"
            f"--- tail of stdout.log ---\n{_tail(root / 'stdout.log')}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 15 s; remove the scratch dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def start_broker() -> KafkaBroker:
    """Resolve the jars (if needed) and start a broker; raise KafkaUnavailable otherwise."""
    java = shutil.which("java")
    if java is None:
        raise KafkaUnavailable("'java' is not on PATH (a JDK 17+ is needed for the Kafka broker)")
    broker = KafkaBroker(ensure_jars(), java)
    broker.start()
    return broker


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        if offset > path.stat().st_size:  # the log was rotated: read it all
            offset = 0
        f.seek(offset)
        return f.read().decode(errors="replace")
