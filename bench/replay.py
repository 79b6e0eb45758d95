"""Replay throughput: :class:`app.replay.Replay` over a window of 1,000,000 events.

A ``job-lifecycle`` topic of the section's own (prefix ``<run prefix>replay-``) gets the
window's events plus 10 % before and 10 % after it (record timestamps 1 ms apart, produced
in time order with bare aiokafka, pre-encoded Avro), so the replay must seek with
``offsets_for_times`` on all 10 partitions, merge them in timestamp order, decode every
record of the window (Avro → event → JSON dict) and stop at the window's end. Measured:
events replayed per second of wall-clock time, opening (offset look-ups) included; each
repetition must return exactly the window. ``--quick`` uses a 10,000-event window.

Why a topic of its own: the run's ``job-lifecycle`` topic already holds the ingest
section's events, stamped with the time they were made (now). The window lies 6 h back,
so in that topic every partition would hold records stamped *after* the window at offsets
*before* it, and ``offsets_for_times`` (the first offset whose timestamp is >= the target)
would answer offset 0 for both the start and the end of the window: an empty replay.
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from app.models import utc_now
from app.publisher import prepare_record
from app.replay import ReplayQuery, open_replay
from app.settings import Settings
from app.topic_admin import ensure_topics
from app.topic_specs import spec_by_name
from bench.context import BenchContext, BenchError, figure, fmt, make_events

TITLE = "Replay throughput"
FULL_WINDOW = 1_000_000
QUICK_WINDOW = 10_000
REPETITIONS = {True: 2, False: 2}
CHUNK = 10_000
TOPIC = "job-lifecycle"
#: Appended to the run's topic prefix: the section's own topic (deleted with the run's topics).
PREFIX_SUFFIX = "replay-"


def _own_topics(ctx: BenchContext) -> Settings:
    """The run's settings with a prefix of this section's own: the window's topic must hold only
    the records produced here, in timestamp order (the ingest section fills the run's own
    job-lifecycle with current timestamps, and a replay stops at the first record stamped at or
    after the window's end)."""
    return replace(ctx.settings, topic_prefix=ctx.topic_prefix + PREFIX_SUFFIX)


async def _produce(ctx: BenchContext, *, settings: Settings, total: int, base_ms: int) -> None:
    """``total`` job-lifecycle records with timestamps base_ms, base_ms + 1, ... (in chunks) to
    the topic of ``settings.topic_prefix``, encoded with the run's codecs (the records carry the
    run's schema id; the replay's decoder looks writer schemas up by id)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        sent = 0
        while sent < total:
            n = min(CHUNK, total - sent)
            futures = []
            for i, event in enumerate(make_events(n, seed=sent)):
                record = prepare_record(event=event, codecs=ctx.codecs, topic_prefix=settings.topic_prefix)
                futures.append(await producer.send(record.topic, record.value, key=record.key,
                                                   timestamp_ms=base_ms + sent + i))
            for future in futures:
                await future
            sent += n
            if sent % 100_000 == 0 or sent == total:
                ctx.log(f"replay: produced {sent:,}/{total:,} records")
    finally:
        await producer.stop()


async def _replay_once(ctx: BenchContext, settings: Settings, query: ReplayQuery) -> tuple[int, int, float]:
    """(events, error lines, seconds) of one full replay of ``query``."""
    gc.collect()
    start = time.perf_counter()
    events = errors = 0
    async with open_replay(settings=settings, query=query, codecs=ctx.codecs) as replay:
        async for line in replay.lines():
            if line["type"] == "event":
                events += 1
            elif line["type"] == "error":
                errors += 1
    return events, errors, time.perf_counter() - start


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    window = QUICK_WINDOW if ctx.quick else FULL_WINDOW
    margin = max(window // 10, 1000)
    total = window + 2 * margin
    settings = _own_topics(ctx)
    await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                        prefix=settings.topic_prefix, specs=(spec_by_name(TOPIC),))
    base_ms = int((utc_now() - timedelta(hours=6)).timestamp() * 1000)
    produce_start = time.perf_counter()
    await _produce(ctx, settings=settings, total=total, base_ms=base_ms)
    produce_s = time.perf_counter() - produce_start
    query = ReplayQuery(topic=TOPIC, start_ms=base_ms + margin, end_ms=base_ms + margin + window)
    rates: list[float] = []
    for repetition in range(REPETITIONS[ctx.quick]):
        events, errors, seconds = await _replay_once(ctx, settings, query)
        if events != window or errors:
            raise BenchError(f"replay returned {events:,} events and {errors} errors; the window holds {window:,}")
        rates.append(events / seconds)
        ctx.log(f"replay: repetition {repetition + 1}: {events:,} events in {seconds:.2f} s = "
                f"{events / seconds:,.0f} events/s")
    return {
        "params": {"window_events": window, "records_in_topic": total, "partitions": 10,
                   "topic": settings.topic_prefix + TOPIC,
                   "repetitions": len(rates), "produce_s": round(produce_s, 1)},
        "figures": {"replay": figure(label=f"replay of a {window:,}-event window (10 partitions)",
                                     unit="events/s", runs=rates, digits=0)},
    }


def markdown(result: dict[str, Any]) -> str:
    params, fig = result["params"], result["figures"]["replay"]
    return "\n".join([
        f"`app.replay.Replay` (the core of `GET /api/events/replay` and `cosmic replay`) over a window of "
        f"{params['window_events']:,} job-lifecycle events in a topic of {params['records_in_topic']:,} "
        f"records on {params['partitions']} partitions: offsets_for_times seek, heap merge in timestamp "
        "order, Avro decode and JSON conversion of every event; median of "
        f"{params['repetitions']} repetitions (each returned exactly the window).",
        "",
        "| measurement | value | range |",
        "| --- | --- | --- |",
        f"| {fig['label']} | {fmt(fig['value'], fig['unit'])} | {fmt(fig['min'], fig['unit'])} – "
        f"{fmt(fig['max'], fig['unit'])} |",
        "",
        f"Producing the topic ({params['records_in_topic']:,} records, pre-encoded) took {params['produce_s']} s.",
    ])
