"""Latency at a fixed rate: publish → table updated, → message in ``job-events-api``, → websocket.

One real worker (``python -m app.ops.cli worker``, its own app id and topic prefix, the RabbitMQ
bridge on, ``COSMIC_RABBITMQ_URL`` = a fresh uuid vhost created through the management API and
deleted at the end, see :class:`bench.bridge._Management`). The bench publishes whole job
lifecycles (:func:`bench.context.make_events`) to ``job-lifecycle`` with :class:`EventPublisher`
at a fixed rate — 50, 100, then the issue's 1,000 events/s (``--quick``: 100 and 1,000) — for
10 s each (``--quick``: 1 s), in batches of ``rate / 100`` events (at least one) paced to the
rate, each batch's ``publish_many`` (acks awaited) in its own task so a slow ack does not lower
the rate. The *publish moment* of an event is ``time.time()`` when its batch is handed to the
publisher. Every latency below is a later ``time.time()`` (or a Kafka timestamp, taken from the
same clock by another process on this machine) minus that moment:

a. **table updated**: the bench reads the worker's ``job_state`` changelog
   (``<app id>-job_state-changelog``, JSON values). A record's value is the job's state after
   the last event of an agent batch that touched the job (a job's events within one batch are
   written once); every ``history`` entry not seen in an earlier record names an event that
   record made visible. Latency: the
   record's Kafka timestamp minus the publish moment — Kafka produce, the worker's consumer,
   the agent's decision and the table write. The timestamp is CreateTime, in milliseconds,
   stamped by the worker's Kafka client when Faust hands it the record: right after the write
   to the local store, plus however long the record waited in Faust's producer buffer (under
   load, changelog records of all tables queue there; the worker logs "producer buffer full").
   Events that change no state (duplicates) write no record and are simply not matched.
b. **message in ``job-events-api``**: the bench consumes that queue of the vhost (aio-pika, no
   ack); latency: the message's arrival in the bench minus the publish moment (matched by AMQP
   ``message_id`` = ``event_id``) — Kafka produce, the worker's consumer, the bridge's
   confirmed publish and delivery.
c. **websocket client received**: one client in a separate process (the client of
   :mod:`bench.websocket`) with an operator token subscribed to ``jobs:all``, the channel
   every job-lifecycle event goes to; latency: the frame parsed in that process minus the
   publish moment (matched by the frame's ``event_id``) — Kafka produce, the worker's
   websocket hub (it reads ``job-lifecycle`` itself, outside the agents' consumer group),
   fan-out and the socket.

After each rate's last send the bench waits until every sink has every event (bounded: a sink
with no new arrival for 30 s, or 600 s after the last send, ends the wait; a sink missing more
than 5 % fails the section), then until every agent of the worker is idle (the audit and
notification agents handle what the lifecycle agent emitted, and may lag behind the sinks). One run per rate, no repetitions. When the worker drains a sink
slower than the send rate (its arrivals per second, first to last arrival, below 95 % of the
rate sent), a backlog builds up and that sink's latencies are mostly queueing delay; the report
says so. Each rate's run also reads the CPU of the worker, the Kafka broker, RabbitMQ, the
bench process and the websocket client (from ``/proc``, from the first send to the last sink
arrival or the last agent's last batch, whichever is later): what the
machine's cores did while it ran, and the worker's CPU per event, which bounds the rate its one
Python thread can drain. The result keeps 101 quantiles (0 … 100 %) of every sink at every rate;
:func:`write_files` draws their distributions to ``benchmarks-latency.png``.

``python -m bench.latency client`` (spec on stdin) is the websocket client process (internal).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from app.core.topic_specs import JOB_LIFECYCLE, spec_by_name
from app.worker.rabbit_topology import JOB_EVENTS_API
from bench.context import (BenchContext, BenchError, bridged_worker, figure, fmt, make_events, publish_paced,
                           wait_quiet)
from bench.ingest import CpuMeter, broker_pids, rabbitmq_pids
from bench.profile import start_profiler, stop_profiler

TITLE = "Latency at a fixed rate"
#: Rates (events/s) in the order they run, lowest first (each on a worker that drained the last):
#: 1,000 is the issue's; 100 was meant to be sustainable, but with the bridge on the worker drains
#: only about that much on a busy 2-core machine (60–105 events/s in trials), so 50 is added too.
#: ``--quick`` (a smoke run) leaves 50 out: the 1,000 events/s backlog already takes most of its time.
FULL_RATES, QUICK_RATES = (50, 100, 1_000), (100, 1_000)
FULL_SECONDS, QUICK_SECONDS = 10.0, 1.0
TICK_S = 0.01
#: The issue's target: P99 publish → table updated at 1,000 events/s.
#: Issue #17: P99 publish → table below 100 ms at 1,000 events/s (stretch: 25 ms).
TARGET_MS, STRETCH_MS, TARGET_RATE = 100.0, 25.0, 1_000
SINKS = ("table", "queue", "websocket")
SINK_LABELS = {
    "table": "publish → table updated",
    "queue": "publish → message in `job-events-api`",
    "websocket": "publish → websocket client received",
}
SINK_NAMES = {"table": "the table", "queue": "`job-events-api`", "websocket": "the websocket client"}
#: Processes whose CPU each rate's run reads (from its first send until every sink and agent is done).
CPU_PROCESSES = ("worker", "broker", "rabbitmq", "bench", "client")
CPU_LABELS = {"worker": "worker (agents, bridge, websocket hub)", "broker": "Kafka broker (JVM)",
              "rabbitmq": "RabbitMQ (Erlang VM)", "bench": "bench process (publisher, sink readers)",
              "client": "websocket client process"}
API_QUEUE = JOB_EVENTS_API
WS_CHANNEL = "jobs:all"
#: After the last send: a sink with no new arrival for STALL_S is done waiting; nobody waits
#: longer than MAX_DRAIN_S; a sink with less than COMPLETE_SHARE of the events fails the run.
STALL_S, MAX_DRAIN_S, COMPLETE_SHARE = 30.0, 600.0, 0.95
#: Warm-up events (whole lifecycles, ~5 events each): enough jobs to reach every partition, so
#: the RocksDB databases a fresh worker creates at a partition's first write (10-20 ms each,
#: app/worker/faust_internals/startup.py) exist before the clock starts.
WARM_UP, WARM_UP_TIMEOUT_S = 400, 120.0
#: After the sinks have every event, the agents that consume what the lifecycle agent emitted
#: (audit trail, notifications: their batch wait is ``COSMIC_BACKGROUND_BATCH_MAX_WAIT_MS``) may
#: still be at work: the bench waits until no agent's handled count changed for this long plus
#: twice that wait (their databases too are created at a partition's first write).
QUIET_S = 1.0
QUANTILE_POINTS = 101
PLOT_NAME = "benchmarks-latency.png"
#: SIGTERM, then SIGKILL after this (it need not drain: the run's topics are deleted at the end).
WORKER_STOP_TIMEOUT_S = 2.0
#: The client process reports the frames it parsed this often.
CLIENT_FLUSH_S = 0.2


# -- arrivals --------------------------------------------------------------------------------
class _Arrivals:
    """First arrival (epoch seconds) of every event id at one sink."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.at: dict[str, float] = {}
        self.last_seen = time.monotonic()  # when this process last learned of a new arrival

    def add(self, event_id: str, at: float) -> None:
        if event_id not in self.at:
            self.at[event_id] = at
            self.last_seen = time.monotonic()

    def count(self, ids: set[str]) -> int:
        return sum(1 for eid in ids if eid in self.at)


async def _wait_for(sinks: Sequence[_Arrivals], ids: set[str], *, timeout: float,
                    stall: float | None = None) -> dict[str, int]:
    """Wait until every sink has every id; a sink also stops being waited for after ``stall``
    s without a new arrival, and everything after ``timeout`` s. Matched count per sink."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {s.name: s.count(ids) for s in sinks}
        now = time.monotonic()
        waiting = [s for s in sinks if counts[s.name] < len(ids)
                   and (stall is None or now - s.last_seen < stall)]
        if not waiting or now >= deadline:
            return counts
        await asyncio.sleep(0.2)


async def _read_changelog(consumer: Any, sink: _Arrivals, timestamp_types: set[int]) -> None:
    """Every ``job_state`` changelog record: each history entry's event not seen before, at the
    record's timestamp (one record carries every event of the job in the worker's batch)."""
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=2000)
        for records in batches.values():
            for record in records:
                if not record.value:
                    continue
                try:
                    state = json.loads(record.value)
                    event_ids = [entry["event_id"] for entry in state["history"]]
                except (ValueError, KeyError, TypeError):
                    continue
                timestamp_types.add(record.timestamp_type)
                for event_id in event_ids:
                    sink.add(event_id, record.timestamp / 1000)


async def _read_client(stdout: asyncio.StreamReader, sink: _Arrivals) -> None:
    """The client process's arrival reports, until it exits."""
    while line := await stdout.readline():
        for event_id, at in json.loads(line).get("arrivals", ()):
            sink.add(event_id, at)


# -- the websocket client process ------------------------------------------------------------
class _FrameLog:
    """What :class:`bench.websocket._Client` reports to: arrival time of each event frame."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, float]] = []
        self.subscribed = self.failed = self.closed = 0
        self.errors: list[Any] = []

    def frame(self, payload: bytes) -> None:
        now = time.time()
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "event":
            self.pending.append((frame["event"]["event_id"], now))
        elif kind == "subscribed":
            self.subscribed += 1
        elif kind == "error":
            self.failed += 1
            self.errors.append(frame)


async def _client_main(*, host: str, port: int, token: str, channel: str) -> None:
    from bench.websocket import _Client

    log = _FrameLog()
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_connection(
        lambda: _Client(host=host, port=port, token=token, channel=channel, stats=log), host, port)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while not (log.subscribed or log.failed or log.closed) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": log.subscribed, "failed": log.failed, "errors": log.errors[:3]}), flush=True)
    stdin_closed = loop.run_in_executor(None, sys.stdin.readline)  # the bench closes stdin at the end
    while True:
        done, _ = await asyncio.wait({stdin_closed}, timeout=CLIENT_FLUSH_S)
        if log.pending:
            batch, log.pending = log.pending, []
            print(json.dumps({"arrivals": batch}), flush=True)
        if done:
            break
    transport.close()


def _client_process_main() -> None:
    spec = json.loads(sys.stdin.readline())  # the first line of stdin: where and what
    asyncio.run(_client_main(**spec))


# -- measuring -------------------------------------------------------------------------------
def _quantiles(values: Sequence[float], *, points: int = QUANTILE_POINTS) -> list[float]:
    """``points`` quantiles from 0 to 100 % (nearest rank, as the other sections' percentiles)."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, int(round(i / (points - 1) * last)))] for i in range(points)]


def _at_pct(quantiles: Sequence[float], pct: int) -> float:
    return quantiles[round(pct / 100 * (len(quantiles) - 1))]


async def _wait_agents_idle(worker: Any, *, on_change: Any = None) -> dict[str, float]:
    """Wait until no agent of ``worker`` handled anything for :data:`QUIET_S` plus twice the
    background agents' batch wait (see there); the handled counts."""
    quiet_s = QUIET_S + 2 * worker.settings.background_batch_max_wait_ms / 1000.0
    return await wait_quiet(base_url=worker.base_url, quiet_s=quiet_s,
                            deadline=time.monotonic() + MAX_DRAIN_S, on_change=on_change)


async def _measure(*, ctx: BenchContext, publisher: Any, sinks: Sequence[_Arrivals], worker: Any,
                   rate: int, seconds: float, seed: int, meter: CpuMeter) -> dict[str, Any]:
    """Publish at ``rate`` for ``seconds``, wait for every sink; the run's figures (with the CPU
    ``meter``'s processes' use from the first send until the sinks and the agents were done)."""
    events = make_events(int(rate * seconds), seed=seed)
    profiler = start_profiler(pid=worker.process.proc.pid, name=f"latency-{rate}")
    meter.start()
    paced = await publish_paced(publisher=publisher, events=events, rate=rate, tick_s=TICK_S, clock=time.time)
    sent_at, sent, started, send_s = paced.sent_at, paced.sent, paced.started, paced.seconds
    achieved, max_in_flight = paced.rate, paced.max_in_flight
    ctx.log(f"latency: {sent:,} events published at {rate:,}/s in {send_s:.2f} s = {achieved:,.0f} events/s "
            f"(at most {max_in_flight} batches in flight); waiting for the sinks")
    ids = set(sent_at)
    counts = await _wait_for(sinks, ids, timeout=MAX_DRAIN_S, stall=STALL_S)
    cpu_s: dict[str, float] = {}
    done_at = time.perf_counter()

    def read_meter() -> None:  # at the last sink arrival, then at each agent batch after it
        nonlocal done_at
        done_at = time.perf_counter()
        cpu_s.clear()
        cpu_s.update(meter.stop())

    await _wait_agents_idle(worker, on_change=read_meter)
    wait_s = done_at - started - send_s
    stop_profiler(profiler)
    short = {name: n for name, n in counts.items() if n < COMPLETE_SHARE * sent}
    if short:
        raise BenchError(f"latency: at {rate:,} events/s only {counts} of {sent:,} events arrived (none for "
                         f"{STALL_S:.0f} s, or {MAX_DRAIN_S:.0f} s after the last send):\n{worker.log_tail()}")
    window_s = send_s + wait_s
    cpu = {name: {"cores": used / window_s, "us_per_event": used / sent * 1e6} for name, used in cpu_s.items()}
    result: dict[str, Any] = {"rate": rate, "events": sent, "achieved_rate": achieved, "send_s": send_s,
                              "wait_s": wait_s, "max_in_flight": max_in_flight, "cpu": cpu, "sinks": {}}
    ctx.log(f"latency: {rate:,}/s CPU over {window_s:.1f} s: " + ", ".join(
        f"{name} {c['cores']:.2f} cores ({c['us_per_event']:,.0f} µs/event)" for name, c in cpu.items()))
    for sink in sinks:
        arrived = {eid: sink.at[eid] for eid in ids if eid in sink.at}
        latencies = [(at - sent_at[eid]) * 1000 for eid, at in arrived.items()]
        quantiles = _quantiles(latencies)
        # the rate this sink drained at: its arrivals over first → last arrival
        drained_eps = (len(arrived) - 1) / max(1e-3, max(arrived.values()) - min(arrived.values()))
        result["sinks"][sink.name] = {
            "matched": len(arrived), "drained_eps": drained_eps,
            "p50": _at_pct(quantiles, 50), "p95": _at_pct(quantiles, 95), "p99": _at_pct(quantiles, 99),
            "min": quantiles[0], "max": quantiles[-1], "quantiles": quantiles,
        }
        ctx.log(f"latency: {rate:,}/s {sink.name}: {len(arrived):,}/{sent:,} matched, p50 {quantiles[50]:.1f} ms, "
                f"p99 {_at_pct(quantiles, 99):.1f} ms, max {quantiles[-1]:.1f} ms, drained at {drained_eps:,.0f}/s")
    return result


async def _start_changelog_reader(*, settings: Any, sink: _Arrivals,
                                  timestamp_types: set[int]) -> tuple[Any, asyncio.Task[None], str]:
    """A consumer outside any group on every partition of the worker's ``job_state`` changelog."""
    from aiokafka import AIOKafkaConsumer, TopicPartition


    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id=f"{settings.app_id}-bench-changelog")
    await consumer.start()
    try:
        topic = f"{settings.app_id}-job_state-changelog"
        topics = await consumer.topics()
        if topic not in topics:
            mine = sorted(t for t in topics if t.startswith(settings.app_id))
            raise BenchError(f"latency: no changelog topic {topic!r} on the broker (the worker's: {mine})")
        # one changelog partition per job-lifecycle partition (tables/job_state.py)
        partitions = spec_by_name(JOB_LIFECYCLE).partitions
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    except BaseException:
        await consumer.stop()
        raise
    return consumer, asyncio.ensure_future(_read_changelog(consumer, sink, timestamp_types)), topic


async def _start_client(*, worker: Any, token: str, sink: _Arrivals) -> tuple[Any, asyncio.Task[None]]:
    """The websocket client process, subscribed; and the task reading its reports."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.latency", "client",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26)
    try:
        spec = {"host": "127.0.0.1", "port": worker.port, "token": token, "channel": WS_CHANNEL}
        child.stdin.write(json.dumps(spec).encode() + b"\n")  # type: ignore[union-attr]
        await child.stdin.drain()  # type: ignore[union-attr]
        line = await asyncio.wait_for(child.stdout.readline(), 90)  # type: ignore[union-attr]
        if not line:
            raise BenchError(f"latency: the websocket client process exited ({await child.wait()})")
        ready = json.loads(line)
        if ready["ready"] != 1:
            raise BenchError(f"latency: the websocket client did not subscribe to {WS_CHANNEL}: {ready}")
    except BaseException:
        await _stop_client(child)
        raise
    return child, asyncio.ensure_future(_read_client(child.stdout, sink))  # type: ignore[arg-type]


async def _stop_client(child: Any) -> None:
    if child.returncode is None and child.stdin is not None and not child.stdin.is_closing():
        child.stdin.close()  # the client flushes its last arrivals and exits
    try:
        await asyncio.wait_for(child.wait(), 10)
    except asyncio.TimeoutError:
        child.kill()
        await child.wait()


async def _measure_all(ctx: BenchContext, *, vhost_url: str, rates: Sequence[int],
                       seconds: float) -> dict[str, Any]:
    import aio_pika

    from app.core.auth import mint_token
    from app.worker.publisher import EventPublisher
    from app.worker.rabbit_topology import declare_topology

    secret = f"bench-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    settings, codecs, worker = await bridged_worker(ctx, name="latency", vhost_url=vhost_url, jwt_secret=secret)
    table, queue_sink, ws = _Arrivals("table"), _Arrivals("queue"), _Arrivals("websocket")
    sinks = (table, queue_sink, ws)
    timestamp_types: set[int] = set()
    publisher = EventPublisher(settings=settings, codecs=codecs)
    connection = await aio_pika.connect(vhost_url, client_properties={"connection_name": "cosmic-bench latency"})
    consumer: Any = None
    child: Any = None
    tasks: list[asyncio.Task[None]] = []
    runs: list[dict[str, Any]] = []
    try:
        # the project's topology (the worker's bridge declares the same, idempotently)
        await declare_topology(connection, url=vhost_url, queue_type=settings.rabbitmq_queue_type,
                               retry_delays=settings.retry_delays)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        api_queue = await channel.get_queue(API_QUEUE, ensure=False)

        async def on_message(message: Any) -> None:
            queue_sink.add(message.message_id, time.time())

        await api_queue.consume(on_message, no_ack=True)
        await publisher.start()
        ready_s = await asyncio.to_thread(worker.start)
        ctx.log(f"latency: worker ready in {ready_s:.1f} s at {worker.base_url}")
        consumer, reader, changelog = await _start_changelog_reader(settings=settings, sink=table,
                                                                    timestamp_types=timestamp_types)
        tasks.append(reader)
        token = mint_token(settings=settings, sub=f"bench-latency-{ctx.run_id}", role=settings.jwt_operator_role)
        child, client_reader = await _start_client(worker=worker, token=token, sink=ws)
        tasks.append(client_reader)
        meter = CpuMeter({"worker": [worker.process.proc.pid], "broker": broker_pids(ctx),
                          "rabbitmq": rabbitmq_pids(ctx), "bench": [os.getpid()], "client": [child.pid]})

        # warm-up: lifecycles through all three paths (partitions assigned, their databases
        # created, bridge connected)
        warm = make_events(WARM_UP, seed=99)
        warm_start = time.perf_counter()
        await publisher.publish_many(warm)
        counts = await _wait_for(sinks, {e.event_id for e in warm}, timeout=WARM_UP_TIMEOUT_S)
        if min(counts.values()) < len(warm):
            raise BenchError(f"latency: warm-up events did not reach every sink in {WARM_UP_TIMEOUT_S:.0f} s "
                             f"({counts} of {len(warm)}):\n{worker.log_tail()}")
        await _wait_agents_idle(worker)
        ctx.log(f"latency: warm-up through table, queue and websocket, every agent idle, in "
                f"{time.perf_counter() - warm_start:.1f} s")
        for seed, rate in enumerate(rates, start=1):
            for task in tasks:
                if task.done():  # a reader died: say why instead of waiting for nothing
                    task.result()
                    raise BenchError(f"latency: a sink reader ended early:\n{worker.log_tail()}")
            runs.append(await _measure(ctx=ctx, publisher=publisher, sinks=sinks, worker=worker, rate=rate,
                                       seconds=seconds, seed=seed, meter=meter))
    finally:
        stop_start = time.perf_counter()
        if child is not None:
            await _stop_client(child)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()
        await publisher.stop()
        await asyncio.to_thread(worker.stop, timeout=WORKER_STOP_TIMEOUT_S)
        await connection.close()
        ctx.log(f"latency: worker stopped in {time.perf_counter() - stop_start:.1f} s")
    return {"runs": runs, "worker_ready_s": ready_s, "changelog": changelog, "app_id": settings.app_id,
            "topic": settings.topic_prefix + JOB_LIFECYCLE,
            "changelog_timestamp_types": sorted(timestamp_types)}


# -- the section ------------------------------------------------------------------------------
async def run(*, ctx: BenchContext) -> dict[str, Any]:
    from bench.bridge import _Management

    seconds = QUICK_SECONDS if ctx.quick else FULL_SECONDS
    rates = QUICK_RATES if ctx.quick else FULL_RATES
    management = _Management(ctx.settings.rabbitmq_url)
    vhost = f"cosmic-bench-latency-{uuid.uuid4().hex}"
    vhost_url = await asyncio.to_thread(management.create_vhost, vhost)
    ctx.log(f"latency: vhost {vhost!r}")
    try:
        measured = await _measure_all(ctx, vhost_url=vhost_url, rates=rates, seconds=seconds)
    finally:
        try:
            await asyncio.to_thread(management.delete_vhost, vhost)
        except BenchError as exc:
            ctx.log(f"latency: could not delete vhost {vhost!r}: {exc}")

    figures: dict[str, Any] = {}
    runs = []
    for r in measured["runs"]:
        rate = r["rate"]
        for sink in SINKS:
            s = r["sinks"][sink]
            for pct in ("p50", "p95", "p99"):
                figures[f"r{rate}_{sink}_{pct}"] = figure(
                    label=f"{SINK_LABELS[sink]}, {pct.upper()} at {rate:,} events/s", unit="ms", runs=[s[pct]])
        runs.append({
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k not in ("sinks", "cpu")},
            "cpu": {name: {k: round(v, 3) for k, v in c.items()} for name, c in r["cpu"].items()},
            "sinks": {name: {k: ([round(q, 2) for q in v] if k == "quantiles" else
                                 round(v, 2) if isinstance(v, float) else v) for k, v in s.items()}
                      for name, s in r["sinks"].items()},
        })
    return {
        "params": {
            "rates": list(rates), "seconds_per_rate": seconds, "tick_ms": TICK_S * 1000,
            "batch_per_tick": {str(rate): max(1, int(rate * TICK_S)) for rate in rates},
            "achieved_rates": {str(r["rate"]): round(r["achieved_rate"], 1) for r in measured["runs"]},
            "events": {str(r["rate"]): r["events"] for r in measured["runs"]},
            "matched": {str(r["rate"]): {name: s["matched"] for name, s in r["sinks"].items()}
                        for r in measured["runs"]},
            "target_ms": TARGET_MS, "stretch_ms": STRETCH_MS, "target_rate": TARGET_RATE,
            "topic": measured["topic"], "worker_app_id": measured["app_id"],
            "changelog_topic": measured["changelog"],
            "changelog_timestamp_types": measured["changelog_timestamp_types"],
            "rabbitmq_queue": API_QUEUE, "vhost": vhost, "websocket_channel": WS_CHANNEL,
            "worker_ready_s": round(measured["worker_ready_s"], 1),
            "quantile_points": QUANTILE_POINTS, "cores": os.cpu_count(),
            "batch_wait_ms": ctx.settings.batch_max_wait_ms,
            "background_wait_ms": ctx.settings.background_batch_max_wait_ms,
        },
        "runs": runs,
        "figures": figures,
    }


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    pacing = ", ".join(f"{batch} every {batch / rate * 1000:g} ms at {rate:,} events/s"
                       for rate in p["rates"] for batch in [p["batch_per_tick"][str(rate)]])
    lines = [
        f"One real worker (own app id and topics, RabbitMQ bridge on, a fresh vhost). The bench "
        f"publishes whole job lifecycles to `job-lifecycle` with `EventPublisher` at a fixed rate — "
        f"{', '.join(f'{r:,}' for r in p['rates'][:-1])} and {p['rates'][-1]:,} events/s in that order, "
        f"{p['seconds_per_rate']:g} s each, paced in batches ({pacing}), each batch's acks awaited in its "
        "own task — "
        "and records each event's publish moment (`time.time()` when its batch is handed to the publisher). "
        "Latency of an event at each sink, from that moment:",
        "",
        f"- **table updated**: the Kafka timestamp (CreateTime, ms) of the `job_state` changelog record "
        f"that first has the event in its `history` (`{p['changelog_topic']}`; a job's events within one "
        "agent batch share one record), stamped by the worker's "
        "producer when Faust handed it the record — right after the table write, plus any wait in Faust's "
        "producer buffer;",
        f"- **message in `{p['rabbitmq_queue']}`**: arrival in the bench's consumer of that queue "
        "(`message_id` = `event_id`), after the worker's bridge published it with confirms;",
        f"- **websocket client received**: the frame parsed by one client in a separate process, "
        f"subscribed to `{p['websocket_channel']}` with an operator token (the worker's hub reads "
        "`job-lifecycle` itself, outside the agents' consumer group).",
        "",
        f"Before the clock starts, {WARM_UP} warm-up events (whole lifecycles) go through every sink: a fresh "
        "worker creates a partition's table databases at its first write (10-20 ms each), which would "
        "otherwise land in the first rate's tail. "
        "The bench waits until every event reached every sink, and then until every agent of the worker was "
        f"idle for {QUIET_S:.0f} s plus twice the background agents' batch wait ({p.get('background_wait_ms', 20):,.0f} ms: "
        "the audit and notification agents handle what the lifecycle agent emitted, and may lag behind the "
        "sinks), after the warm-up and before the next rate. \"Drained at\": the "
        "sink's arrivals per second from its first to its last arrival — the rate the worker sustained "
        "for that sink. One run per rate (no repetitions); the machine's other load makes the tails noisy.",
        "",
        "| rate (achieved) | sink | matched / sent | P50 | P95 | P99 | max | drained at |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        for sink in SINKS:
            s = r["sinks"][sink]
            lines.append(f"| {r['rate']:,} events/s ({r['achieved_rate']:,.0f}) | {SINK_LABELS[sink]} | "
                         f"{s['matched']:,} / {r['events']:,} | {s['p50']:,.1f} ms | {s['p95']:,.1f} ms | "
                         f"{s['p99']:,.1f} ms | {s['max']:,.1f} ms | {fmt(s['drained_eps'], 'events/s')} |")
    measured_cpu = [r for r in result["runs"] if r.get("cpu")]
    if measured_cpu:
        names = [n for n in CPU_PROCESSES if any(n in r["cpu"] for r in measured_cpu)]
        lines += ["", "CPU of each process on the machine while each rate ran (user + system, from `/proc`, from "
                      "the first send to the last arrival at any sink or the last batch of any agent, whichever is later; "
                      "cores = CPU seconds per second of that "
                      "window, µs = CPU per event sent). The machine has "
                      f"{p.get('cores') or os.cpu_count()} cores; the worker's agents, bridge and websocket hub share one Python "
                      "thread (and the GIL with its consumer thread):",
                  "",
                  "| rate | " + " | ".join(CPU_LABELS[n] for n in names) + " | all of them |",
                  "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
        for r in measured_cpu:
            cells = [f"{r['cpu'][n]['cores']:.2f} cores ({r['cpu'][n]['us_per_event']:,.0f} µs)" if n in r["cpu"]
                     else "–" for n in names]
            total = sum(c["cores"] for c in r["cpu"].values())
            lines.append(f"| {r['rate']:,} events/s | " + " | ".join(cells) + f" | **{total:.2f} cores** |")
    target = next((r for r in result["runs"] if r["rate"] == p["target_rate"]), None)
    if target is not None:
        p99 = target["sinks"]["table"]["p99"]
        verdict = "met" if p99 < p["target_ms"] else "**not met**"
        stretch = f" (stretch {p['stretch_ms']:g} ms)" if p.get("stretch_ms") else ""
        lines += ["", f"Target: P99 publish → table updated below {p['target_ms']:g} ms{stretch} at "
                      f"{p['target_rate']:,} events/s — measured **{p99:,.1f} ms**: {verdict}."]
        worker_cpu = (target.get("cpu") or {}).get("worker")
        if p99 >= p["target_ms"] and worker_cpu:
            total = sum(c["cores"] for c in target["cpu"].values())
            capacity = 1e6 / worker_cpu["us_per_event"]
            line = (f"The floor behind it, measured in this run: at {p['target_rate']:,} events/s the worker "
                    f"used {worker_cpu['cores']:.2f} cores — {worker_cpu['us_per_event']:,.0f} µs of CPU per "
                    f"event, so its one Python thread can handle at most about {capacity:,.0f} events/s — and "
                    f"the processes above used {total:.2f} of the machine's {p.get('cores') or os.cpu_count()} "
                    "cores. ")
            if capacity < p["target_rate"]:
                line += ("Below one core's worth of events the worker keeps up (the lower rates' rows: the "
                         "per-event latency); above it every event waits behind a growing backlog, whatever the "
                         "per-event latency.")
            else:
                line += (f"It had room for this rate, but that one thread was busy {worker_cpu['cores'] * 100:.0f} % of the "
                         "time, shared by the lifecycle agent with the audit and notification agents, the "
                         "RabbitMQ bridge and the websocket hub: an event waits behind whatever of that is "
                         "running when it arrives, and behind the rest of its own batch (docs/profiles.md says "
                         "where the time goes).")
            lines += ["", line]
    for r in result["runs"]:
        behind = [(sink, r["sinks"][sink]["drained_eps"]) for sink in SINKS
                  if r["sinks"][sink]["drained_eps"] < 0.95 * r["achieved_rate"]]
        if behind:
            which = ", ".join(f"{eps:,.0f} events/s to {SINK_NAMES[sink]}" for sink, eps in behind)
            lines += ["", f"**At {r['rate']:,} events/s the worker fell behind**: {r['achieved_rate']:,.0f} events/s "
                          f"sent, but it drained only {which}. A backlog built up while the events were sent, so "
                          "those latencies are mostly the backlog's queueing delay — they grow with the run's "
                          "length — not a per-event cost."]
    lines += ["", f"![Latency distributions]({PLOT_NAME})"]
    return "\n".join(lines)


def write_files(result: dict[str, Any], *, output_dir: Path) -> list[str]:
    """Draw ``benchmarks-latency.png``: the latency distribution (CDF) of every sink at every
    rate, from the result's quantiles alone, with the target as a vertical line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"table": "tab:blue", "queue": "tab:orange", "websocket": "tab:green"}
    styles = ["--", "-", "-.", ":"]
    for i, r in enumerate(sorted(result["runs"], key=lambda r: r["rate"])):
        for sink in SINKS:
            quantiles = [max(0.1, q) for q in r["sinks"][sink]["quantiles"]]
            pcts = [100 * k / (len(quantiles) - 1) for k in range(len(quantiles))]
            ax.plot(quantiles, pcts, color=colors[sink], linestyle=styles[i % len(styles)], linewidth=1.6,
                    label=f"{SINK_LABELS[sink].replace('`', '')}, {r['rate']:,} events/s")
    target = result["params"]["target_ms"]
    ax.axvline(target, color="tab:red", linestyle=":", linewidth=1.4, label=f"target: {target:g} ms")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("latency from publish (ms, log scale)")
    ax.set_ylabel("events arrived within (%)")
    ax.set_title("Latency distribution at a fixed publish rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / PLOT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return [PLOT_NAME]


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        _client_process_main()
    else:
        print("internal: python -m bench.latency client < SPEC (run the bench with python -m bench)",
              file=sys.stderr)
        sys.exit(2)
