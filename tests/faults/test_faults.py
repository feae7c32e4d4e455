"""The fault suite (issue 16): the four stages as processes, faults injected under load, every
scenario checked against the simulator's own record of what it sent. See docs/faults.md.

The scenarios run in order on one stack (``conftest.pipeline``); each sends its own load, breaks
something while it runs, restores it, and then checks delivery. The last tests check what the
whole run left behind: aggregates against a batch recomputation, memory bounds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import pytest

from simulators import Fleet
from tests.faults._checks import Ledger, summary
from tests.faults._load import Load, fault_fleet
from tests.faults._recompute import compare_minute_windows
from tests.faults.conftest import MEMORY_BOUND_BYTES, STAGES, Pipeline, partition_seconds

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)
RATE = 150  # msg/s: a steady city on a shared 2-core machine, with room for the replays
LEDGER = Ledger()
SEED = int(time.time()) % 100_000
RANDOM = random.Random(SEED)
FLEET: Fleet | None = None


@pytest.fixture(autouse=True)
def _every_stage_up(pipeline: Pipeline) -> None:
    """A stage that an earlier scenario left dead (that scenario failed for it) is restarted
    first, so each scenario reports its own failures, not its predecessor's."""
    for process in pipeline.stages.values():
        if not process.running():
            log.warning("restarting %s, left dead by an earlier scenario", process.stage)
            process.start()
    for process in pipeline.stages.values():
        process.wait_ready()


def _run_load(
    pipeline: Pipeline, seconds: float, during: Callable[[Load], None] | None = None
) -> Load:
    """A load of ``seconds``, or for as long as ``during`` (the fault) takes and 5 s more."""
    global FLEET
    if FLEET is None:
        FLEET = fault_fleet(pipeline.registry, SEED)
    load = Load(pipeline.settings.mqtt, FLEET, RATE, 3600)
    load.start()
    try:
        if during is not None:
            during(load)
            time.sleep(5)
        else:
            time.sleep(seconds)
    finally:
        load.stop.set()
        load.join(360)
    assert not load.is_alive(), "the load did not finish"
    assert load.error is None, load.error
    return load


def _all_running(pipeline: Pipeline) -> None:
    for stage in pipeline.stages.values():
        assert stage.running(), f"{stage.stage} exited: {stage.tail()}"


def _check(pipeline: Pipeline, load: Load, *, at_least_once: bool = False) -> None:
    LEDGER.add(load, at_least_once=at_least_once)
    counts = LEDGER.check_delivered(load, pipeline.tap, pipeline.stored_rows)
    LEDGER.check_dead_letters(pipeline.tap)
    _all_running(pipeline)
    print(f"seed {SEED}: {summary(counts)}")


def test_mixed_input_with_duplicate_deliveries(pipeline: Pipeline) -> None:
    """10 % malformed, 5 % late, 2 % delivered twice (a second gateway, an MQTT redelivery)."""
    load = _run_load(pipeline, 30)
    assert {s.duplicate for s in load.sent} >= {"dup-gateway", "dup-mqtt"}
    assert {s.tag for s in load.sent} == {"ok", "late", "bad"}
    _check(pipeline, load)


def test_kill_9_of_each_stage_at_random_moments(pipeline: Pipeline) -> None:
    """Every stage killed twice with SIGKILL at random moments under load, then restarted."""
    kills = [stage for stage in STAGES for _ in range(2)]
    RANDOM.shuffle(kills)

    def kill_them(_load: Load) -> None:
        for stage in kills:
            time.sleep(RANDOM.uniform(2, 6))
            process = pipeline.stages[stage]
            if process.running():
                process.kill()
                time.sleep(RANDOM.uniform(0.2, 2))
                process.start()  # not waiting for it: the next kill may come while it starts
        for process in pipeline.stages.values():
            process.wait_ready()

    load = _run_load(pipeline, 0, kill_them)
    _check(pipeline, load, at_least_once=True)


@pytest.mark.parametrize("path", ["kafka", "pg:sink", "mqtt:ingest"])
def test_partition(pipeline: Pipeline, path: str) -> None:
    """A black hole on one path for ``partition_seconds()`` under load: nothing lost, no stage
    gives up, and they all catch up after it."""
    outage = partition_seconds()
    proxy = pipeline.proxies[path]

    def partition(_load: Load) -> None:
        time.sleep(5)
        proxy.drop()
        try:
            time.sleep(outage)
            _all_running(pipeline)
        finally:
            proxy.restore()

    load = _run_load(pipeline, 0, partition)
    _check(pipeline, load, at_least_once=path == "kafka")


def test_publication_survives_a_database_partition(pipeline: Pipeline) -> None:
    """The API's database path black-holed, then reset: the API is ready again afterwards."""
    proxy = pipeline.proxies["pg:publish"]
    proxy.drop()
    time.sleep(10)
    proxy.restore()
    proxy.reset()
    publish = pipeline.stages["publish"]
    publish.wait_ready()
    _all_running(pipeline)


def test_mqtt_connection_reset_redelivers_without_double_dead_letters(pipeline: Pipeline) -> None:
    """Ingest's MQTT connection reset several times under load: the broker redelivers what was
    not acknowledged; valid messages and dead letters still come out once."""
    proxy = pipeline.proxies["mqtt:ingest"]

    def resets(_load: Load) -> None:
        for _ in range(4):
            time.sleep(RANDOM.uniform(3, 6))
            proxy.reset()

    load = _run_load(pipeline, 0, resets)
    _check(pipeline, load)


def test_sigterm_under_load_drains_and_exits_0(pipeline: Pipeline) -> None:
    """Each stage, under load, stopped with SIGTERM: it drains and exits 0 (1 would mean its
    shutdown ran over ``shutdown_deadline_s``), and nothing is lost once it is back."""
    statuses: dict[str, int] = {}

    def stop_each(_load: Load) -> None:
        for stage in reversed(STAGES):  # intake first, as a deployment rolls
            time.sleep(3)
            process = pipeline.stages[stage]
            statuses[stage] = process.terminate()
            process.start()
            process.wait_ready()

    load = _run_load(pipeline, 0, stop_each)
    assert statuses == dict.fromkeys(STAGES, 0), statuses
    _check(pipeline, load)


def test_final_aggregates_equal_a_batch_recomputation(pipeline: Pipeline) -> None:
    counts = compare_minute_windows(
        pipeline.tap, pipeline.stored_rows(), pipeline.query, pipeline.registry
    )
    print(f"windows compared: {summary(counts)}")


def test_late_records_are_all_in_the_late_topic(pipeline: Pipeline) -> None:
    counts = LEDGER.check_late(pipeline.tap)
    assert counts["declared"] > 0, counts  # the check had something to check
    print(f"late: {summary(counts)}")


def test_memory_bounds(pipeline: Pipeline) -> None:
    peaks = {name: stage.peak_rss for name, stage in pipeline.stages.items()}
    print("peak RSS MiB: " + summary({k: v // 2**20 for k, v in peaks.items()}))
    assert all(peak > 0 for peak in peaks.values()), peaks
    assert all(peak <= MEMORY_BOUND_BYTES for peak in peaks.values()), peaks
