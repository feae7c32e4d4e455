"""``citysense stack up`` from a fresh clone in a private directory, as ``make run`` does it.

``/root`` is mode 0700: as root, PostgreSQL (which refuses to run as root and runs as the
``postgres`` system user) cannot enter a clone there, so its data must live elsewhere. Not as
root, the server runs as the invoking user, who owns the private directory. Either way the clone
must come up, answer SQL, and go down without leaving a process behind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from citysense.stack import free_port, port_open, system_postgres_dir
from citysense.stack._process import pid_alive, read_pid

pytestmark = pytest.mark.integration

_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(_REPO), *args, "-z"], check=True, capture_output=True, text=True
    )
    return [name for name in listed.stdout.split("\0") if name]


def _overlay_working_tree(clone: Path) -> None:
    """Make the clone's files those of the working tree, uncommitted edits included (ignored
    files such as ``.venv/``, ``.stack/`` and compiled extensions stay out, as in a clone)."""
    for name in _git("ls-files", "--deleted"):
        (clone / name).unlink(missing_ok=True)
    for name in _git("ls-files", "--cached", "--others", "--exclude-standard"):
        source = _REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A ``git clone`` of this repository, with the working tree's edits, inside a directory
    only its owner may enter (as a clone in ``/root`` is)."""
    private = Path(tempfile.mkdtemp(prefix="citysense-private-"))
    private.chmod(0o700)
    clone = private / "citysense"
    subprocess.run(
        ["git", "clone", "--quiet", str(_REPO), str(clone)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    _overlay_working_tree(clone)
    try:
        yield clone
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _cli(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The clone's own ``citysense`` (its sources first on the path), run from the clone."""
    return subprocess.run(
        [sys.executable, "-c", "from citysense.cli import main; main()", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_stack_up_from_a_clone_in_a_private_directory(private_clone: Path) -> None:
    clone = private_clone
    assert clone.parent.stat().st_mode & 0o777 == 0o700
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        PYTHONPATH=str(clone),
        CITYSENSE_STACK_MQTT_PORT=str(free_port()),
        CITYSENSE_STACK_KAFKA_PORT=str(free_port()),
        CITYSENSE_STACK_POSTGRES_PORT=str(free_port()),
        CITYSENSE_STACK_PROMETHEUS_PORT=str(free_port()),
        CITYSENSE_HTTP_PORT=str(free_port()),
    )
    where = subprocess.run(
        [sys.executable, "-c", "import citysense.stack; print(citysense.stack.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(clone), "the clone's code must run"

    stack_dir = clone / ".stack"  # the default: nothing names another directory
    outside = system_postgres_dir(stack_dir)
    if os.geteuid() == 0:
        # What a `.stack` deleted by hand leaves behind: data whose password went with it.
        (outside / "data").mkdir(parents=True, exist_ok=True)
        (outside / "data" / "PG_VERSION").write_text("15\n")
    try:
        up = _cli(clone, env, "stack", "up")
        assert up.returncode == 0, up.stderr
        assert "postgres" in up.stdout

        env_lines = dict(
            line.split("=", 1) for line in _cli(clone, env, "stack", "env").stdout.splitlines()
        )
        with psycopg.connect(env_lines["CITYSENSE_DATABASE_URL"], connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT current_setting('data_directory'),"
                " (SELECT extname FROM pg_extension WHERE extname = 'timescaledb')"
            ).fetchone()
        assert row is not None
        data_directory, extension = Path(row[0]), row[1]
        assert extension == "timescaledb"

        pid = read_pid(stack_dir / "postgres.pid")
        assert pid_alive(pid)
        assert pid is not None
        if os.geteuid() == 0:
            # The postgres user cannot enter the private directory: the data is outside it.
            assert _uid_of(pid) == pwd.getpwnam("postgres").pw_uid
            assert data_directory == outside / "data"
            assert not data_directory.is_relative_to(clone.parent)
            assert (stack_dir / "postgres.location").read_text().strip() == str(outside)
            assert outside.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        else:
            # The invoking user owns the private directory and runs the server there.
            assert _uid_of(pid) == os.getuid()
            assert data_directory == stack_dir / "postgres" / "data"
            assert not outside.exists()

        # A second `up` finds the same data again, through the recorded location.
        again = _cli(clone, env, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert "no change" in again.stdout

        down = _cli(clone, env, "stack", "down")
        assert down.returncode == 0, down.stderr
        assert not pid_alive(pid)
        assert not port_open(int(env["CITYSENSE_STACK_POSTGRES_PORT"]))
    finally:
        purge = _cli(clone, env, "stack", "purge")
    assert purge.returncode == 0, purge.stderr
    assert not stack_dir.exists()
    assert not outside.exists()
