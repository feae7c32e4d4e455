"""``citysense run``'s components stopped while Kafka is gone: a clean shutdown, exit 0.

Regression (issue 16, end-to-end and fault runs): with the broker gone, aiokafka's
``consumer.stop()`` lets out the ``CancelledError`` of the fetch it cancels. It escaped the
aggregator's stop, ended the runtime's shutdown there, and the sink (stopped last) was never
stopped: its tasks were cancelled with the process's leftovers, logged as "stage failed: task
sink-retention was cancelled", and its database pool was left open.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import pytest

from citysense.runtime import run, run_components
from citysense.settings import HttpSettings, Settings
from sinks.timescale import SinkSettings, TimescaleSink
from streams import AggregateService
from tests._proxy import proxied_kafka
from tests.sinks._helpers import fresh_database, scalar, unique, wait_until
from tests.streams.test_service_integration import _settings as aggregate_settings

pytestmark = pytest.mark.integration


def test_components_stopped_with_kafka_gone_all_stop_and_nothing_counts_as_failed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="citysense")
    admin_url = settings.database.url.get_secret_value()
    connections: list[int] = []
    with proxied_kafka() as (kafka, proxy):

        async def main() -> int:
            async with fresh_database(settings) as db:
                config = db.model_copy(update={"kafka": kafka})
                database = urlsplit(db.database.url.get_secret_value()).path.lstrip("/")
                sink = TimescaleSink(
                    config,
                    SinkSettings(
                        group_id=unique("sink-gone"),
                        topics=(unique("test.noise"),),
                        dead_letter_topic=unique("test.deadletter"),
                        batch_max_wait_s=0.1,
                        session_timeout_ms=6000,
                        heartbeat_interval_ms=500,
                    ),
                )
                aggregator = AggregateService(aggregate_settings(config, unique("aggregate-gone")))
                stop = asyncio.Event()
                # As `citysense run` lists them: the sink first, so it stops last.
                running = asyncio.create_task(
                    run_components(
                        [sink, aggregator],
                        HttpSettings(port=0),
                        shutdown_deadline_s=20,
                        stop_event=stop,
                    )
                )

                async def ready() -> bool:
                    assert not running.done(), running
                    return sink.ready() and aggregator.ready()

                await wait_until(ready, 60, "the sink and the aggregator to be ready")
                proxy.refuse()  # Kafka gone: connections aborted, new ones refused
                await asyncio.sleep(1.0)
                stop.set()
                status = await running

                async def sink_connections() -> int:
                    return int(
                        await scalar(
                            admin_url,
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'citysense-sink' AND datname = %s",
                            (database,),
                        )
                    )

                async def pool_closed() -> bool:
                    return await sink_connections() == 0

                await wait_until(pool_closed, 10, "the sink's database pool to close")
                connections.append(await sink_connections())
                return status

        status = run(main)
    failures = [r for r in caplog.records if r.getMessage() == "stage failed"]
    assert failures == [], [getattr(r, "reason", "") for r in failures]
    assert status == 0
    assert connections == [0]
