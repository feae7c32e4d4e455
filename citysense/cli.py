"""The ``citysense`` command line: stack control, stages, simulator, decoder, version."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from citysense import __version__
from citysense.settings import FastPath, Settings, SettingsError, load_settings

if TYPE_CHECKING:  # imported lazily: the CLI must start fast
    from citysense.registry import Registry
    from citysense.runtime import Component
    from citysense.stack import Stack

__all__ = ["app", "main"]

app = typer.Typer(
    name="citysense",
    help="Real-time ingestion pipeline for city sensor networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The embedded service stack on loopback.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


class _Options:
    """Global options (before the command): ``citysense --debug sink``."""

    debug = False


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a start-up error.")
    ] = False,
) -> None:
    _Options.debug = debug


def _fail(message: str, status: int = 2) -> NoReturn:
    typer.echo(f"citysense: {message}", err=True)
    raise typer.Exit(status)


def _fail_with(error: BaseException, message: str, status: int) -> NoReturn:
    """One line; the traceback before it only with ``--debug``."""
    if _Options.debug:
        traceback.print_exception(error, file=sys.stderr)
    elif status != 2:
        message += " (--debug shows the traceback)"
    _fail(message, status)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


# --- stack ----------------------------------------------------------------------------------


def _stack() -> Stack:
    from citysense.stack import default_stack

    settings = _settings()
    return default_stack(settings.stack, settings.metrics_ports())


@stack_app.command("up")
def stack_up() -> None:
    """Start Mosquitto, Kafka (Tansu), PostgreSQL+TimescaleDB and Prometheus; no-op if up."""
    from citysense.stack import StackError

    stack = _stack()
    try:
        started = stack.up(report=lambda msg: typer.echo(msg, err=True))
    except StackError as exc:
        _fail(str(exc), 1)
    typer.echo("stack up" + (f" (started {', '.join(started)})" if started else " (no change)"))


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service of the embedded stack."""
    stopped = _stack().down()
    typer.echo("stack down" + (f" (stopped {', '.join(stopped)})" if stopped else " (no change)"))


@stack_app.command("purge")
def stack_purge() -> None:
    """Stop the embedded stack and delete its state (databases, queues, secrets)."""
    stack = _stack()
    stopped = stack.purge()
    typer.echo(
        f"stack purged: {stack.root} deleted"
        + (f" (stopped {', '.join(stopped)})" if stopped else "")
    )


@stack_app.command("status")
def stack_status() -> None:
    """One line per service; exit status 1 unless all are running."""
    statuses = _stack().status()
    for s in statuses:
        state = f"running pid {s.pid}" if s.running else "stopped"
        typer.echo(f"{s.name:<11} 127.0.0.1:{s.port:<6} {state}")
    if not all(s.running for s in statuses):
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """KEY=VALUE lines other commands and tests read (URLs carry credentials)."""
    for key, value in _stack().env().items():
        typer.echo(f"{key}={value}")


# --- stages -----------------------------------------------------------------------------------


@app.command()
def run() -> None:
    """Run every stage in one process (the embedded default) until SIGTERM/SIGINT."""
    from citysense.logs import configure_logging
    from citysense.runtime import AfterSinkPrepared
    from ingest import IngestService
    from sinks.timescale import TimescaleSink
    from streams import AggregateService

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, stage="run")
    registry = _registry(settings)
    sink = TimescaleSink(settings, settings.sink, registry)
    # Start order is drain order reversed: the sink starts first and stops last; the API stops
    # just before it, the aggregator after ingest. The API starts once the sink has migrated
    # the database (on a fresh one, its views do not exist before).
    _run_stage(
        settings,
        "run",
        [
            sink,
            *(AfterSinkPrepared(c, sink) for c in _publication(settings)),
            AggregateService(settings, registry),
            IngestService(settings, registry),
        ],
    )


def _publication(settings: Settings) -> list[Component]:
    """The publication API and, when configured, the push to an external portal."""
    from sinks.opendata import DatasetsFileError, publication_components

    try:
        return publication_components(settings)
    except DatasetsFileError as exc:
        _fail(str(exc))


def _registry(settings: Settings) -> Registry:
    from citysense.registry import RegistryError, load_registry, scenario_path

    try:
        return load_registry(settings.registry or scenario_path("nation"))
    except RegistryError as exc:
        _fail(str(exc))


def _run_stage(
    settings: Settings, stage: str, components: list[Component], *, health: bool = True
) -> NoReturn:
    """Run ``components`` as ``stage``; a start-up error is one line (exit 2, or 1 for a fault
    of ours), a failure while running exits 1 after a clean shutdown, a signal exits 0."""
    from citysense.errors import StartupError
    from citysense.runtime import run_stage

    try:
        status = run_stage(settings, stage, components, health=health)
    except StartupError as exc:
        _fail_with(exc, str(exc), 2)
    except Exception as exc:
        _fail_with(exc, f"{stage} could not start: {type(exc).__name__}: {exc}", 1)
    raise typer.Exit(status)


@app.command()
def ingest(
    client_id_suffix: Annotated[
        str, typer.Option(help="Appended to the MQTT client id (one per ingest process).")
    ] = "",
) -> None:
    """MQTT/LoRaWAN listeners → Avro on Kafka (at-least-once, dead letters)."""
    from citysense.logs import configure_logging
    from ingest import IngestService

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, stage="ingest")
    registry = _registry(settings)
    _run_stage(
        settings,
        "ingest",
        [IngestService(settings, registry, client_id_suffix=client_id_suffix)],
    )


@app.command()
def aggregate() -> None:
    """Measurements → event-time windows and city indicators (per sensor, per site, daily)."""
    from citysense.logs import configure_logging
    from streams import AggregateService

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, stage="aggregate")
    _run_stage(settings, "aggregate", [AggregateService(settings, _registry(settings))])


@app.command()
def sink() -> None:
    """Kafka → TimescaleDB, exactly-once rows (offsets stored with the rows)."""
    from citysense.logs import configure_logging
    from sinks.timescale import TimescaleSink

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, stage="sink")
    registry = _registry(settings)
    _run_stage(settings, "sink", [TimescaleSink(settings, settings.sink, registry)])


db_app = typer.Typer(help="TimescaleDB schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations, role passwords and storage policies."""
    from citysense.errors import StartupError
    from sinks.timescale import db_migrate as migrate

    settings = _settings()
    try:
        status = migrate(settings, registry=_registry(settings))
    except StartupError as exc:
        _fail_with(exc, str(exc), 2)
    raise typer.Exit(status)


@db_app.command("status")
def db_status() -> None:
    """List migrations; exit status 1 if one is pending or was changed after it was applied."""
    from citysense.errors import StartupError
    from sinks.timescale import db_status as status

    try:
        code = status(_settings())
    except StartupError as exc:
        _fail_with(exc, str(exc), 2)
    raise typer.Exit(code)


@app.command()
def publish() -> None:
    """Open-data API (OpenDataSoft-compatible), exports, live feed, display page, push."""
    from citysense.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, stage="publish")
    # The API serves its own /metrics, /healthz and /readyz on publish.port.
    _run_stage(settings, "publish", _publication(settings), health=False)


@app.command()
def status(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one snapshot as a JSON line and exit.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, max=60, help="Seconds between refreshes (and rate span).")
    ] = 2.0,
) -> None:
    """Live view of the running pipeline: rates, lag, dead letters, late records, sites."""
    import asyncio
    import logging

    from citysense.status import run_status

    settings = _settings()
    # An unreachable broker is a line in the view; aiokafka's own error lines would garble it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(run_status(settings, once=once, interval_s=interval, as_json=as_json))
    except KeyboardInterrupt:
        return


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(_settings().masked(), indent=2))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


# --- decode -----------------------------------------------------------------------------------


@app.command()
def decode(
    payload_hex: Annotated[str | None, typer.Argument(metavar="HEX")] = None,
    codec: Annotated[str | None, typer.Option(help="Codec name (see --list).")] = None,
    fport: Annotated[int | None, typer.Option(help="LoRaWAN fPort.")] = None,
    list_codecs: Annotated[bool, typer.Option("--list", help="List codecs.")] = False,
) -> None:
    """Decode one payload and print the canonical measurement as JSON."""
    from decoders import DecodeError, all_codecs, get_codec
    from decoders.render import decoded_as_json

    if list_codecs:
        for c in all_codecs():
            ports = ",".join(str(p) for p in c.fports) or "any"
            typer.echo(f"{c.name:<18} {'/'.join(c.kinds):<16} fport {ports:<8} {c.description}")
        return
    if codec is None or payload_hex is None:
        _fail("decode needs --codec NAME and a HEX payload (or --list)")
    try:
        payload = bytes.fromhex(payload_hex.replace(" ", ""))
    except ValueError:
        _fail(f"payload is not hexadecimal: {payload_hex!r}")
    try:
        chosen = get_codec(codec)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    try:
        decoded = chosen.decode(payload, fport)
    except DecodeError as exc:
        _fail(f"cannot decode: {exc}")
    typer.echo(json.dumps(decoded_as_json(decoded)))


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="Shipped scenario name.")] = "nation",
    registry: Annotated[
        Path | None, typer.Option(help="Registry file (.toml/.csv) instead of a scenario.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed sends the same city.")] = 0,
    rate: Annotated[float, typer.Option(min=0, help="Messages/s in all; 0 = max.")] = 50,
    duration: Annotated[float | None, typer.Option(min=0, help="Seconds to run.")] = None,
    messages: Annotated[int | None, typer.Option(min=0, help="Messages to send.")] = None,
    bad_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of malformed.")] = 0,
    late_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of late events.")] = 0,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Publisher processes.")] = 1,
) -> None:
    """Publish a simulated sensor fleet over MQTT; the last stdout line is a JSON summary."""
    from citysense.registry import RegistryError, scenario_path
    from simulators import PublishError, SimulationSpec, run_simulation

    settings = _settings()
    if duration is None and messages is None:
        _fail("give --duration SECONDS or --messages N")
    try:
        path = registry if registry is not None else scenario_path(scenario)
        summary = run_simulation(
            SimulationSpec(
                registry_path=path,
                mqtt=settings.mqtt,
                seed=seed,
                rate=rate,
                duration_s=duration,
                messages=messages,
                bad_ratio=bad_ratio,
                late_ratio=late_ratio,
                processes=processes,
                fast=settings.fast(FastPath.MQTT_PUBLISH),
            )
        )
    except (RegistryError, PublishError, OSError, ValueError) as exc:
        _fail(str(exc), 1)
    typer.echo(json.dumps(summary))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
