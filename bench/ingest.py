"""Ingest throughput: bare aiokafka vs the Python publisher vs ``POST /api/events``.

All three write the same kind of records (prepare_record: key, Avro value, event-time
timestamp, headers) to one fresh, uuid-prefixed topic set, in batches of ``batch_size``
events whose acks are all awaited before the next batch (and before the clock stops):

a. bare aiokafka — an AIOKafkaProducer configured like EventPublisher's (acks=all,
   idempotent, same linger) sending pre-encoded records: the reference;
b. EventPublisher.publish_many over the same events (encoding included);
c. POST /api/events on a real worker subprocess, JSON arrays, a few requests in flight.

c runs first, while the worker is up (its agent consumes what it ingests, as in production);
the worker is stopped before a and b, which alternate, so nothing else consumes then.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import signal
import time
from typing import Any, Awaitable, Callable, Sequence

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.core.topic_specs import JOB_LIFECYCLE
from app.core.validation import event_to_json
from app.ops.topic_admin import ensure_topics
from app.worker.publisher import EventPublisher, OutgoingRecord, prepare_record
from bench.context import BenchContext, BenchError, chunks, event_mix, figure, fmt, make_events, ratio
from bench.worker import BenchWorker

TITLE = "Ingest throughput"
#: EventPublisher.start's linger; used only when it cannot be read from a started publisher.
DEFAULT_LINGER_MS = 5
LIFECYCLE = JOB_LIFECYCLE
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK
    except (OSError, IndexError, ValueError):
        return None


def broker_pids(ctx: BenchContext) -> list[int]:
    """The local stack's Kafka broker pids (empty for another cluster); only read, never signalled."""
    try:
        from app.ops.stack.manager import StackManager

        manager = StackManager(settings=ctx.settings, echo=lambda _line: None)
        pids = manager.kafka(brokers=manager.running_brokers() or 1).running_pids()  # node id → pid
        return [int(pid) for pid in (pids.values() if isinstance(pids, dict) else pids)]
    except Exception:  # noqa: BLE001 - CPU accounting is optional
        return []


def rabbitmq_pids(ctx: BenchContext) -> list[int]:
    """The local stack's RabbitMQ node pid (its Erlang VM), empty for another server; only read."""
    try:
        from app.ops.stack.manager import StackManager

        pid = StackManager(settings=ctx.settings, echo=lambda _line: None).rabbit.running_pid()
        return [int(pid)] if pid else []
    except Exception:  # noqa: BLE001 - CPU accounting is optional
        return []


class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop()."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.before: dict[str, float | None] = {}

    def _read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in self.pids.items():
            values = [cpu_seconds(pid) for pid in pids]
            out[name] = None if not values or None in values else sum(v for v in values if v is not None)
        return out

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {name: after[name] - self.before[name]  # type: ignore[operator]
                for name in after if after[name] is not None and self.before.get(name) is not None}


async def _send_records(producer: AIOKafkaProducer, records: Sequence[OutgoingRecord], batch_size: int) -> None:
    """Send batch by batch, awaiting every ack of a batch (the same pattern as publish_many)."""
    for batch in chunks(records, batch_size):
        futures = [
            await producer.send(r.topic, r.value, key=r.key, timestamp_ms=r.timestamp_ms, headers=list(r.headers))
            for r in batch
        ]
        for future in futures:
            await future


async def _publish(publisher: EventPublisher, events: Sequence[Any], batch_size: int) -> None:
    for batch in chunks(events, batch_size):
        await publisher.publish_many(batch)


async def _post_all(session: aiohttp.ClientSession, url: str, bodies: Sequence[tuple[bytes, int]],
                    concurrency: int, *, token: str) -> None:
    """POST every body with ``concurrency`` requests in flight (as a publisher, ``token``); each
    must be a 202 for all events."""
    pending = iter(bodies)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    async def client() -> None:
        for body, count in pending:
            async with session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
                if response.status != 202:
                    raise BenchError(f"POST /api/events answered {response.status}: {raw[:500]!r}")
                accepted = json.loads(raw).get("accepted")
                if accepted != count:
                    raise BenchError(f"POST /api/events accepted {accepted} of {count} events")

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _timed(label: str, ctx: BenchContext, n: int, meter: CpuMeter,
                 action: Callable[[], Awaitable[None]]) -> tuple[float, dict[str, float]]:
    """(events/s, CPU seconds per process) of one repetition."""
    gc.collect()
    meter.start()
    start = time.perf_counter()
    await action()
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    rate = n / elapsed
    ctx.log(f"ingest: {label}: {n:,} events in {elapsed:.2f} s = {rate:,.0f} events/s")
    return rate, cpu


async def _committed(admin: AIOKafkaAdminClient, *, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def _per_event_us(cpu_runs: list[dict[str, float]], name: str, n: int) -> list[float]:
    return [run[name] / n * 1e6 for run in cpu_runs if name in run]


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    settings = ctx.settings
    n, batch_size, reps = ctx.events, ctx.batch_size, ctx.ingest_repetitions
    reports = await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                                  prefix=ctx.topic_prefix)
    lifecycle_topic = ctx.topic_prefix + LIFECYCLE
    partitions = next(r.partitions for r in reports if r.name == lifecycle_topic)
    await asyncio.to_thread(ctx.codecs.warm_up)

    publisher = EventPublisher(settings=settings, codecs=ctx.codecs)
    await publisher.start()
    producer: AIOKafkaProducer | None = None
    worker = BenchWorker(settings=settings, workdir=ctx.workdir)
    worker.env["COSMIC_JWT_SECRET"] = secrets.token_urlsafe(32)  # ingest needs a publisher's token
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30000)
    brokers = broker_pids(ctx)
    here = os.getpid()
    runs: dict[str, list[float]] = {"bare": [], "publisher": [], "http": []}
    cpu: dict[str, list[dict[str, float]]] = {"bare": [], "publisher": [], "http": []}
    committed: int | None = None
    posted = 0
    mix: dict[str, int] = {}
    ready_s = 0.0
    linger_ms = DEFAULT_LINGER_MS
    try:
        accumulator = getattr(publisher._producer, "_message_accumulator", None)  # noqa: SLF001
        linger_ms = round(getattr(accumulator, "_linger_time", DEFAULT_LINGER_MS / 1000) * 1000)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=linger_ms)
        await producer.start()
        await admin.start()

        # warm-up (untimed): connections, metadata of every partition, broker JIT
        warm = make_events(max(batch_size, min(n, 2000)))
        await _send_records(producer, [prepare_record(event=e, codecs=ctx.codecs, topic_prefix=ctx.topic_prefix)
                                       for e in warm], batch_size)
        await _publish(publisher, make_events(batch_size), batch_size)

        # c. HTTP against a real worker (first, so its agent has no backlog from a and b)
        ready_s = await asyncio.to_thread(worker.start)
        ctx.log(f"ingest: worker ready in {ready_s:.1f} s at {worker.base_url}")
        meter = CpuMeter({"bench": [here], "worker": [worker.process.proc.pid], "broker": brokers})  # type: ignore[union-attr]
        url = f"{worker.base_url}/api/events"
        token = worker.process.publisher_token()

        def bodies_of(events: Sequence[Any]) -> list[tuple[bytes, int]]:
            return [(json.dumps([event_to_json(e) for e in batch]).encode(), len(batch))
                    for batch in chunks(events, batch_size)]

        connector = aiohttp.TCPConnector(limit=ctx.http_concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            warm_bodies = bodies_of(make_events(batch_size * (1 if ctx.quick else ctx.http_concurrency)))
            await _post_all(session, url, warm_bodies, ctx.http_concurrency, token=token)
            posted += sum(count for _, count in warm_bodies)
            for rep in range(reps):
                bodies = bodies_of(make_events(n))
                rate, used = await _timed(f"http {rep + 1}/{reps}", ctx, n, meter,
                                          lambda: _post_all(session, url, bodies, ctx.http_concurrency, token=token))
                runs["http"].append(rate)
                cpu["http"].append(used)
                posted += n
        # How far the worker's own consumers got meanwhile (they share its process and event loop).
        try:
            committed = await _committed(admin, group=settings.app_id, topic=lifecycle_topic)
        except Exception as exc:  # noqa: BLE001 - a diagnostic only
            ctx.log(f"ingest: could not read the worker's committed offsets: {exc!r}")
        ctx.log(f"ingest: worker group had committed {committed} of {posted:,} job-lifecycle events")
        stop_start = time.monotonic()
        # SIGKILL: its consumers' backlog is not measured here, and a SIGTERM'd worker first
        # drains what it has buffered (a minute at the end of this section).
        await asyncio.to_thread(worker.process.stop, sig=signal.SIGKILL)
        ctx.log(f"ingest: worker killed in {time.monotonic() - stop_start:.1f} s")

        # a and b, alternating which goes first; the same events (a gets their pre-encoded bytes)
        meter = CpuMeter({"bench": [here], "broker": brokers})
        for rep in range(reps):
            events = make_events(n)
            mix = event_mix(events)
            records = [prepare_record(event=e, codecs=ctx.codecs, topic_prefix=ctx.topic_prefix) for e in events]
            order = ("bare", "publisher") if rep % 2 == 0 else ("publisher", "bare")
            for path in order:
                if path == "bare":
                    action = lambda: _send_records(producer, records, batch_size)  # noqa: E731
                else:
                    action = lambda: _publish(publisher, events, batch_size)  # noqa: E731
                rate, used = await _timed(f"{path} {rep + 1}/{reps}", ctx, n, meter, action)
                runs[path].append(rate)
                cpu[path].append(used)
    finally:
        await asyncio.to_thread(worker.stop)
        if producer is not None:
            await producer.stop()
        await publisher.stop()
        await admin.close()

    figures = {
        "bare_aiokafka_eps": figure(label="a. bare aiokafka (pre-encoded records)", unit="events/s",
                                    runs=runs["bare"], digits=0),
        "publisher_eps": figure(label="b. Python publisher (`EventPublisher.publish_many`)", unit="events/s",
                                runs=runs["publisher"], digits=0),
        "http_eps": figure(label="c. HTTP `POST /api/events` (real worker)", unit="events/s",
                           runs=runs["http"], digits=0),
    }
    figures["publisher_vs_bare"] = ratio(label="b / a", numerator=figures["publisher_eps"],
                                         denominator=figures["bare_aiokafka_eps"])
    figures["http_vs_bare"] = ratio(label="c / a", numerator=figures["http_eps"],
                                    denominator=figures["bare_aiokafka_eps"])

    cpu_figures: dict[str, dict[str, Any]] = {}
    for path, procs in (("bare", ("bench", "broker")), ("publisher", ("bench", "broker")),
                        ("http", ("bench", "worker", "broker"))):
        for proc in procs:
            values = _per_event_us(cpu[path], proc, n)
            if values:
                cpu_figures[f"{path}_{proc}_cpu_us"] = figure(
                    label=f"{path}: {proc}", unit="µs/event", runs=values, digits=1)
    return {
        "params": {
            "events_per_repetition": n, "repetitions": reps, "batch_size": batch_size,
            "http_concurrency": ctx.http_concurrency, "linger_ms": linger_ms, "acks": "all",
            "enable_idempotence": True, "topic": lifecycle_topic, "partitions": partitions,
            "replication_factor": settings.replication_factor, "event_mix": mix,
            "worker_ready_s": round(ready_s, 1),
            "http_events_posted_incl_warmup": posted,
            "worker_committed_at_end_of_http": committed,
        },
        "figures": figures,
        "cpu": cpu_figures,
    }


def markdown(result: dict[str, Any]) -> str:
    p, f, cpu = result["params"], result["figures"], result.get("cpu", {})
    lines = [
        f"{p['events_per_repetition']:,} job-lifecycle events per repetition to `{p['topic']}` "
        f"({p['partitions']} partitions, replication factor {p['replication_factor']}), in batches "
        f"of {p['batch_size']} events; acks=all, idempotent producer, linger {p['linger_ms']} ms. "
        f"Every ack is in before the clock stops. Median of {p['repetitions']} repetitions, "
        "range in brackets.",
        "",
        "| path | throughput (median) | range |",
        "| --- | --- | --- |",
    ]
    for key in ("bare_aiokafka_eps", "publisher_eps", "http_eps"):
        fig = f[key]
        lines.append(f"| {fig['label']} | {fmt(fig['value'], fig['unit'])} | "
                     f"{fig['min']:,.0f}–{fig['max']:,.0f} events/s |")
    lines += [
        "",
        "How to read this: (a) is what aiokafka alone achieves with this producer configuration "
        "on this broker — the ceiling for Python producers here. b / a is the share left once the "
        "publisher encodes each event (Avro via the registry codec) in the same process; c / a "
        "adds HTTP, JSON parsing and validation in the worker, which also runs its agent. "
        "Batches are awaited one at a time in (a) and (b) (as `publish_many` does); (c) keeps "
        "several requests in flight.",
        "",
        "| ratio | value |",
        "| --- | --- |",
        f"| b / a: publisher vs bare aiokafka | {fmt(f['publisher_vs_bare']['value'], 'ratio')} |",
        f"| c / a: HTTP vs bare aiokafka | {fmt(f['http_vs_bare']['value'], 'ratio')} |",
        "",
        f"HTTP: {p['http_concurrency']} requests in flight, each a JSON array of {p['batch_size']} events, "
        "against one `python -m app.ops.cli worker` (RocksDB store) whose `track_job_lifecycle` agent "
        "consumes and applies the same events while they arrive (as a production worker would). "
        f"The worker was ready {p['worker_ready_s']} s after start (not timed); repetitions run "
        "back to back.",
    ]
    done, posted = p.get("worker_committed_at_end_of_http"), p.get("http_events_posted_incl_warmup")
    if done is not None and posted:
        lines[-1] += (
            f" When the last HTTP repetition ended, the worker's consumer group had committed "
            f"offsets for {done:,} of the {posted:,} job-lifecycle events posted ({done / posted:.1%})"
            + ("; its agents, in the same process, lag far behind ingest, so they were busy for the "
               "whole HTTP measurement and share the worker's one core with it." if done < 0.9 * posted else ".")
        )
    if cpu:
        lines += [
            "",
            "Where the time goes: CPU time per event of each process during the timed runs (user + "
            "system from `/proc/<pid>/stat`, 10 ms ticks; broker = the local stack's Kafka JVM). "
            "*Cores busy* = CPU per event × throughput: a Python process (one thread doing the "
            "work) near 1.0 is the bottleneck of that path.",
            "",
            "| path | process | CPU per event (median) | ≈ cores busy |",
            "| --- | --- | --- | --- |",
        ]
        rates = {"bare": f["bare_aiokafka_eps"]["value"], "publisher": f["publisher_eps"]["value"],
                 "http": f["http_eps"]["value"]}
        for key, fig in cpu.items():
            path = key.split("_", 1)[0]
            _label_path, proc = fig["label"].split(": ", 1)
            busy = fig["value"] * rates[path] / 1e6
            lines.append(f"| {_label_path} | {proc} | {fmt(fig['value'], fig['unit'])} | {busy:.2f} |")
    return "\n".join(lines)
