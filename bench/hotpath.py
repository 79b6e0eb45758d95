"""CPU per lifecycle event of the pipeline's own handling, in one process, without a broker:
``python -m bench.hotpath [--jobs N] [--batch N] [--profile FILE]``.

The bench workload (``app.ops.workload``: whole job lifecycles with duplicates and swapped
pairs) is encoded, then run through the real handlers in batches of 500, exactly as
:func:`app.worker.streams.process_events` runs them — ``track_job_lifecycle`` (lifecycle and
anomaly side), then ``record_audit_trail`` on the audit records it emitted, then
``deliver_notifications`` on its notifications — on Faust's memory store (``--store rocksdb``:
RocksDB in a temporary directory, as in the worker), with a producer
that acknowledges at once. What is left out is Faust's consumer and producer (fetching,
per-record delivery to the agent, the Kafka client) and, unless asked for, RocksDB; what is measured is the
Python this project adds per event. The codecs use the schema registry of
``COSMIC_SCHEMA_REGISTRY_URL`` (one request per schema).

Every table database is opened before the clock starts (a worker does that once). It prints
CPU µs (``time.process_time``) per record of each agent and per lifecycle event;
``--profile FILE`` writes a cProfile of the whole run (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
import zlib
from collections import Counter
from types import SimpleNamespace
from typing import Any

from app.core.topic_specs import AUDIT_TRAIL, JOB_LIFECYCLE, NOTIFICATIONS

BATCH = 500


class _Producer:
    """Acknowledges every send at once; keeps what was sent to the event topics."""

    started = False

    def __init__(self) -> None:
        self.sends = 0
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.changelog: Counter[str] = Counter()

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> asyncio.Future:
        self.sends += 1
        if topic.endswith("-changelog"):
            self.changelog[topic] += 1
        else:
            self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=self.sends))
        return future


def _events(topic: str, records: list[tuple[bytes, bytes]]) -> list[Any]:
    """Faust events of ``topic`` for ``(key, value)`` pairs (10 partitions by key, offsets in order)."""
    from faust.events import Event
    from faust.types import TP

    from app.worker.main import app

    events = []
    for offset, (key, value) in enumerate(records):
        partition = zlib.crc32(key) % 10
        message = SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=time.time(),
                                  key=key, value=value, headers=[], tp=TP(topic, partition))
        event = Event.__new__(Event)
        event.app, event.key, event.value, event.message, event.headers = app, key, value, message, {}
        events.append(event)
    return events


async def _run(*, jobs: int, profile: str | None, batch_size: int = BATCH) -> dict[str, float]:
    import agents.audit as audit
    import agents.job_lifecycle as lifecycle
    import agents.notifications as notifications
    import app.worker.streams as streams
    from app.worker.batching import Batch
    from app.worker.faust_internals import set_current_event
    from app.worker.main import app, codecs
    from app.core.validation import key_of
    from app.ops.workload import build_workload

    app.finalize()
    app.flow_control.resume()
    workload = build_workload(jobs=jobs, seed=11, prefix="hotpath")
    codec = codecs.for_topic(JOB_LIFECYCLE)
    source = _events(JOB_LIFECYCLE, [(key_of(e).encode(), codec.encode(e)) for e in workload.deliveries])
    producer = _Producer()
    # Open every table's databases first: a worker opens (creates) them once, at a partition's
    # first read or write (app.worker.faust_internals.startup), about 10 ms each here — a
    # start-up cost that would otherwise count as ~100 µs per event of a 10,000-event run.
    began = time.process_time()
    opened = 0
    for table in app.tables.values():
        store = table.data
        if hasattr(store, "_db_for_partition"):
            for partition in range(table.changelog_topic.partitions or app.conf.topic_partitions):
                store._db_for_partition(partition)
                opened += 1
    opening = time.process_time() - began

    async def handle(events: list[Any], *, topic: str, handler: Any, as_json: bool) -> None:
        for start in range(0, len(events), batch_size):
            batch = Batch(producer=producer, window=256, backoff=streams.backoff_delay, direct_changelog=True)
            with batch.active():
                for event in events[start:start + batch_size]:
                    set_current_event(event)
                    await streams.handle_one(topic=topic, origin=streams._origin(event.message), handler=handler,
                                             as_json=as_json)
                await batch.finish()

    profiler = cProfile.Profile() if profile else None
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    # (agent, topic, handler, its events, whether its agent decodes with as_json)
    stages = (("track_job_lifecycle", JOB_LIFECYCLE, lifecycle.handle_event, lambda: source, False),
              ("record_audit_trail", AUDIT_TRAIL, audit.handle_audit_record, None, True),
              ("deliver_notifications", NOTIFICATIONS, notifications.handle_notification, None, False))
    for name, topic, handler, given, as_json in stages:
        events = given() if given else _events(topic, [(k, v) for t, k, v in producer.sent if t.endswith(topic)])
        if profiler:
            profiler.enable()
        began = time.process_time()
        await handle(events, topic=topic, handler=handler, as_json=as_json)
        seconds[name] = time.process_time() - began
        if profiler:
            profiler.disable()
        counts[name] = len(events)
    if profiler:
        profiler.dump_stats(profile)
    total = len(source)
    result: dict[str, float] = {"lifecycle_events": total, "databases_opened_first": opened,
                                "opening_them_s": round(opening, 2)}
    for name in seconds:
        result[f"{name}_us_per_record"] = round(seconds[name] * 1e6 / max(counts[name], 1), 1)
        result[f"{name}_us_per_lifecycle_event"] = round(seconds[name] * 1e6 / total, 1)
        result[f"{name}_records"] = counts[name]
    result["total_us_per_lifecycle_event"] = round(sum(seconds.values()) * 1e6 / total, 1)
    result["changelog_records_per_lifecycle_event"] = round(sum(producer.changelog.values()) / total, 2)
    for topic, records in producer.changelog.most_common():
        result[f"  {topic.split('-', 1)[1].removesuffix('-changelog')}"] = round(records / total, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="job lifecycles (about 5 events each)")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"events per agent batch (default {BATCH}; a worker's batches are smaller at low "
                             "rates: this shows what a batch costs besides its events)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the handling to FILE")
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="memory",
                        help="the tables' store: Faust's memory store, or RocksDB in a temporary directory "
                             "(the worker's: table reads and writes at their real cost)")
    args = parser.parse_args(argv)
    os.environ["COSMIC_STORE"] = f"{args.store}://"  # before app.worker.main is imported
    if args.store == "rocksdb":
        os.environ["COSMIC_DATA_DIR"] = tempfile.mkdtemp(prefix="cosmic-hotpath-")
    import logging

    logging.getLogger("agents").setLevel(logging.ERROR)  # the anomaly side logs every alert
    result = asyncio.run(_run(jobs=args.jobs, profile=args.profile, batch_size=args.batch))
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
