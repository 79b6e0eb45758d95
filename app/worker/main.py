"""The Faust application. Agents, tables and web views attach to ``app`` from their own
modules, found by ``autodiscover``; importing this module does no network or disk I/O."""

from __future__ import annotations

import faust

from app.core.codecs import Codecs
from app.core.settings import Settings
from app.worker import faust_internals
from app.worker.gc_policy import apply_gc_policy
from app.worker.logging_setup import logging_config

settings = Settings.from_env()
faust_internals.install(fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
#: The Avro codecs of every topic (Faust codec names ``avro:<topic>``); no I/O until used.
codecs = Codecs(settings=settings)
codecs.register_with_faust()


def create_app(*, settings: Settings) -> faust.App:
    """Build the Faust app from ``settings``."""
    return faust_internals.App(
        settings.app_id,
        broker=settings.kafka_broker_url,
        store=settings.store,
        datadir=str(settings.worker_data_dir),
        autodiscover=["agents", "tables", "app.web"],
        origin="app.worker.main",
        version=1,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=10,
        topic_allow_declare=True,
        # No leader-only timers or tasks: without them Faust's leader-election topic is one more
        # topic per app, created while the group joins ("Ignoring missing topic").
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000.0,
        table_standby_replicas=settings.table_standby_replicas,
        broker_session_timeout=settings.broker_session_timeout_seconds,
        broker_heartbeat_interval=settings.broker_session_timeout_seconds / 10,
        web_enabled=True,
        web_bind=settings.web_host,
        # Faust's canonical URL (what the other workers reach this one at), not the bind address.
        web_host=settings.web_advertised_host or settings.web_host,
        web_port=settings.web_port,
        # Faust's built-in views expose table contents and internals: off.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        # Structured logs (COSMIC_LOG_FORMAT text|json) with the event's correlation_id and job_id.
        logging_config=logging_config(log_format=settings.log_format, log_level=settings.log_level),
    )


app = create_app(settings=settings)


@app.task
async def tune_garbage_collector() -> None:
    """Once the worker has started: the collector policy of :mod:`app.worker.gc_policy`."""
    apply_gc_policy(enabled=settings.gc_tuning)


def main() -> None:
    """Entry point of ``python -m app.worker.main worker``: Faust's own command line."""
    app.main()


if __name__ == "__main__":
    main()
