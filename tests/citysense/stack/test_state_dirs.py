"""Where the stack keeps PostgreSQL's data outside a private stack directory, and purging it."""

from __future__ import annotations

from pathlib import Path

from citysense.stack import SYSTEM_STATE_DIR, Stack, system_postgres_dir


def _stack(root: Path, system_dir: Path) -> Stack:
    # Ports are never used: no service is started here.
    return Stack(
        root=root,
        mqtt_port=1,
        kafka_port=2,
        postgres_port=3,
        prometheus_port=4,
        system_dir=system_dir,
    )


def test_each_stack_directory_gets_its_own_stable_system_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / ".stack", tmp_path / "b" / ".stack"
    assert system_postgres_dir(first) == system_postgres_dir(first)
    assert system_postgres_dir(first) != system_postgres_dir(second)
    assert system_postgres_dir(first).parent == SYSTEM_STATE_DIR
    # The same directory named through a relative path is the same stack.
    relative = Path(*[".."] * len(Path.cwd().parts)) / first.relative_to("/")
    assert system_postgres_dir(relative) == system_postgres_dir(first)


def test_purge_deletes_the_stack_and_its_postgres_directory(tmp_path: Path) -> None:
    root, system_dir = tmp_path / "clone" / ".stack", tmp_path / "system"
    outside = system_postgres_dir(root, system_dir)
    (outside / "data").mkdir(parents=True)
    root.mkdir(parents=True)
    (root / "postgres.location").write_text(f"{outside}\n")

    assert _stack(root, system_dir).purge() == []

    assert not root.exists()
    assert not outside.exists()
    assert system_dir.is_dir()  # other clones' data stays


def test_purge_never_deletes_a_directory_it_did_not_name(tmp_path: Path) -> None:
    root, system_dir = tmp_path / "clone" / ".stack", tmp_path / "system"
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("x")
    root.mkdir(parents=True)
    (root / "postgres.location").write_text(f"{precious}\n")

    _stack(root, system_dir).purge()

    assert not root.exists()
    assert (precious / "keep").read_text() == "x"


def test_outside_root_a_postgres_directory_is_found_again_through_its_record(
    tmp_path: Path,
) -> None:
    root, system_dir = tmp_path / "clone" / ".stack", tmp_path / "system"
    elsewhere = system_postgres_dir(root, system_dir)
    root.mkdir(parents=True)
    (root / "postgres.location").write_text(f"{elsewhere}\n")
    assert _stack(root, system_dir).postgres_dir() == elsewhere
