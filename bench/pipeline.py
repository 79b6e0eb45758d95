"""Pipeline throughput: events/s through one worker's ``track_job_lifecycle`` agent (decode,
dedupe, state, audit and notification emit), with the RabbitMQ bridge off and on, against a
bare aiokafka consume→produce loop over the same records on the same broker.

The section's own topics (prefix ``<run prefix>pipeline-``) get a workload of whole job
lifecycles (``app.workload``: submitted → … → completed / failed / cancelled / retried, 10 %
sent twice, some pairs swapped) published with ``EventPublisher``. Then, one at a time and
each from the beginning of the topic:

a. **bare loop**: one aiokafka consumer (its own group) and one producer (acks=all,
   idempotent): fetch a batch, produce every record's value unchanged to a topic of its
   own, await the acks, commit — the ceiling of any Python consume→produce loop here;
b. **worker, bridge off**: a real ``python -m app.cli worker`` (own app id, RocksDB) — all its
   agents run, so the audit and notification agents consume what the lifecycle agent emits;
c. **worker, bridge on**: the same with the RabbitMQ bridge publishing every event (a fresh
   vhost; publisher confirms awaited before the events are acked).

A worker's rate is read from its ``/metrics`` (events handled per agent, polled every
0.25 s): events handled between the first poll that saw any and the poll that saw all,
over that time — so start-up and table recovery are not counted. For (c) the slower of the
lifecycle and the bridge agents sets the rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.request
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.publisher import EventPublisher
from app.topic_admin import ensure_topics
from app.topic_specs import spec_by_name
from app.workload import build_workload
from bench.context import BenchContext, BenchError, chunks, figure, fmt, ratio

TITLE = "Pipeline throughput"
#: A job's lifecycle is about 5.2 events: jobs = the run's event count / 5 (20,000 → 4,000).
EVENTS_PER_JOB = 5
POLL_S = 0.25
#: Give up on a worker that has not handled every event after this long.
DRAIN_TIMEOUT_S = 900.0
TOPIC = "job-lifecycle"
_METRIC = re.compile(r'^cosmic_processing_seconds_count\{agent="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _handled(base_url: str) -> dict[str, float]:
    """Events handled so far per agent, from the worker's /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {agent: float(count) for agent, count in _METRIC.findall(text)}


async def _bare_loop(ctx: BenchContext, *, source: str, sink: str, total: int) -> float:
    """events/s of a bare consume→produce loop over ``total`` records of ``source``."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=ctx.settings.kafka_bootstrap,
                                group_id=f"{ctx.settings.app_id}-pipeline-bare-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=500)
    producer = AIOKafkaProducer(bootstrap_servers=ctx.settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        done = 0
        first: float | None = None
        while done < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if not batches:
                continue
            if first is None:
                first = time.perf_counter()
            futures = []
            for records in batches.values():
                for record in records:
                    futures.append(await producer.send(sink, record.value, key=record.key))
            for future in futures:
                await future
            await consumer.commit()
            done += len(futures)
        return total / (time.perf_counter() - (first or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


async def _worker_rate(ctx: BenchContext, *, settings: Any, name: str, bridge: bool, total: int,
                       agents: tuple[str, ...]) -> dict[str, Any]:
    from bench.worker import BenchWorker

    workdir = ctx.workdir / f"pipeline-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    worker = BenchWorker(settings=dataclasses.replace(settings, app_id=f"{settings.app_id}-pipeline-{name}"),
                         workdir=workdir)
    worker.env["COSMIC_RABBITMQ_BRIDGE_ENABLED"] = "true" if bridge else "false"
    started = await asyncio.to_thread(worker.start, timeout=240)
    try:
        first: tuple[float, float] | None = None
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            counts = await asyncio.to_thread(_handled, worker.base_url)
            now = time.perf_counter()
            handled = min(counts.get(agent, 0.0) for agent in agents)
            if first is None and handled > 0:
                first = (now, handled)
            if handled >= total:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"pipeline ({name}): {handled:,.0f} of {total:,} events handled after "
                                 f"{DRAIN_TIMEOUT_S:.0f} s\n{worker.log_tail()}")
            await asyncio.sleep(POLL_S)
        assert first is not None
        seconds = max(now - first[0], POLL_S)
        rate = (handled - first[1]) / seconds if handled > first[1] else total / seconds
        ctx.log(f"pipeline: {name}: {rate:,.0f} events/s ({handled - first[1]:,.0f} events in {seconds:.1f} s; "
                f"worker ready in {started:.1f} s)")
        return {"rate": rate, "counted_events": handled - first[1], "seconds": seconds}
    finally:
        await asyncio.to_thread(worker.stop, timeout=10)


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    from bench.bridge import _Management

    jobs = max(ctx.events // EVENTS_PER_JOB, 20)
    settings = dataclasses.replace(ctx.settings, topic_prefix=f"{ctx.topic_prefix}pipeline-")
    await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                        prefix=settings.topic_prefix)
    bare_settings = dataclasses.replace(ctx.settings, topic_prefix=f"{ctx.topic_prefix}pipeline-bare-")
    await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                        prefix=bare_settings.topic_prefix, specs=(spec_by_name(TOPIC),))
    workload = build_workload(jobs=jobs, seed=11, prefix=f"bench-{ctx.run_id}")
    deliveries = workload.deliveries
    total = len(deliveries)
    produce_start = time.perf_counter()
    async with EventPublisher(settings=settings) as publisher:
        for part in chunks(deliveries, 1000):
            await publisher.publish_many(list(part))
    produce_s = time.perf_counter() - produce_start
    ctx.log(f"pipeline: {total:,} events of {jobs:,} jobs published in {produce_s:.1f} s")

    bare = await _bare_loop(ctx, source=settings.topic_prefix + TOPIC, sink=bare_settings.topic_prefix + TOPIC,
                            total=total)
    ctx.log(f"pipeline: bare consume→produce loop: {bare:,.0f} events/s")
    off = await _worker_rate(ctx, settings=settings, name="bridge-off", bridge=False, total=total,
                             agents=("track_job_lifecycle",))
    management = _Management(ctx.settings.rabbitmq_url)
    vhost = f"cosmic-bench-pipeline-{uuid.uuid4().hex}"
    vhost_url = await asyncio.to_thread(management.create_vhost, vhost)
    try:
        on = await _worker_rate(ctx, settings=dataclasses.replace(settings, rabbitmq_url=vhost_url),
                                name="bridge-on", bridge=True, total=total,
                                agents=("track_job_lifecycle", "bridge_to_rabbitmq"))
    finally:
        try:
            await asyncio.to_thread(management.delete_vhost, vhost)
        except BenchError as exc:
            ctx.log(f"pipeline: could not delete vhost {vhost!r}: {exc}")
    figures = {
        "bare": figure(label="a. bare aiokafka consume→produce loop", unit="events/s", runs=[bare], digits=0),
        "bridge_off": figure(label="b. worker, RabbitMQ bridge off", unit="events/s", runs=[off["rate"]], digits=0),
        "bridge_on": figure(label="c. worker, RabbitMQ bridge on", unit="events/s", runs=[on["rate"]], digits=0),
    }
    return {
        "params": {"jobs": jobs, "events": total, "duplicates": workload.duplicates,
                   "topic": settings.topic_prefix + TOPIC, "partitions": spec_by_name(TOPIC).partitions,
                   "produce_s": round(produce_s, 1), "batch_size": ctx.settings.agent_batch_size,
                   "batch_wait_ms": ctx.settings.agent_batch_wait_ms,
                   "counted": {"bridge_off": off, "bridge_on": on}},
        "figures": figures,
        "ratios": {
            "off_vs_bare": ratio(label="b / a: worker (bridge off) vs bare loop",
                                 numerator=figures["bridge_off"], denominator=figures["bare"]),
            "on_vs_bare": ratio(label="c / a: worker (bridge on) vs bare loop",
                                numerator=figures["bridge_on"], denominator=figures["bare"]),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    params, figs, ratios = result["params"], result["figures"], result["ratios"]
    lines = [
        f"{params['events']:,} job-lifecycle events ({params['jobs']:,} whole job lifecycles, "
        f"{params['duplicates']:,} sent twice, some pairs swapped) in `{params['topic']}` "
        f"({params['partitions']} partitions), consumed from the beginning by each path in turn. "
        "(a) one aiokafka consumer and an idempotent acks=all producer copying every record to a topic of its "
        "own, acks awaited per fetched batch, then a commit; (b) and (c) a real worker (all its agents: "
        "lifecycle, audit chain, notifications, anomaly detection; RocksDB tables), agents taking batches of "
        f"up to {params['batch_size']} events ({params['batch_wait_ms']:g} ms wait). A worker's rate is events "
        "handled per second between the first and the last poll of its `/metrics` (every 0.25 s), so start-up "
        "is not counted; with the bridge on, the slower of the lifecycle and bridge agents counts. One run each.",
        "",
        "| path | throughput |",
        "| --- | --- |",
    ]
    for key in ("bare", "bridge_off", "bridge_on"):
        lines.append(f"| {figs[key]['label']} | {fmt(figs[key]['value'], figs[key]['unit'])} |")
    lines += ["", "| ratio | value |", "| --- | --- |"]
    for r in ratios.values():
        lines.append(f"| {r['label']} | {r['value']:.3f} × ({r['value'] * 100:.1f} %) |")
    lines += ["", f"Publishing the topic took {params['produce_s']} s."]
    return "\n".join(lines)
