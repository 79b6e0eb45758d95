"""RabbitMQ bridge: publish throughput with publisher confirms, and Kafka → queue latency.

Everything runs in a fresh uuid vhost (created through the management API — AMQP port +
10000, the AMQP URL's credentials — with full permissions for that user, deleted at the
end) on the run's RabbitMQ, its topology declared with :func:`app.worker.rabbit_topology.declare_topology`.

1. Publish throughput with confirms, the same job-lifecycle events through three paths to the
   ``job.events`` exchange (routed to ``job-events-api`` and ``job-events-audit``, persistent);
   (a) and (b) one message at a time, each confirm awaited before the next publish
   (:meth:`RabbitBridge.publish` returns once RabbitMQ acked), (c) as the agents publish their batch's copies:

   a. bare aio-pika: a confirm channel publishing pre-built messages (the very bodies and
      properties of ``event_message``) with their routing keys: the reference;
   b. the project's bridge: a started :class:`app.worker.rabbit_bridge.RabbitBridge` service,
      ``publish(event)`` per event (``route_for`` + ``event_message`` + bounded publish on
      its confirm channel + ack check);
   c. the agents' way: ``publish_events`` of the whole repetition, one write per window
      of ``COSMIC_RABBITMQ_CONFIRM_WINDOW`` messages, every confirm awaited before it returns.

   Repetitions rotate which path goes first; both work queues are purged before each. Each
   timed repetition also records the CPU of RabbitMQ's Erlang VM (the local stack's) and of
   this process, per message.

2. End-to-end latency at a fixed rate: a real worker (``python -m app.ops.cli worker``, its own
   app id and topic prefix, ``COSMIC_RABBITMQ_URL`` = the vhost) bridges ``job-lifecycle``;
   the bench publishes job-lifecycle events to Kafka with :class:`EventPublisher` at
   1,000 events/s for 5 s (``--quick``: 1 s) — a batch of 10 every 10 ms, each batch's
   ``publish_many`` (acks awaited) in its own task so slow acks do not lower the rate — and
   consumes a private queue bound to ``job.events`` with ``job.#`` in this process. Latency of an event: its arrival in
   the bench's consumer minus the moment its batch was handed to the publisher (matched by
   AMQP ``message_id`` = ``event_id``): Kafka produce + the worker's consumer + the bridge's
   confirmed publish + RabbitMQ delivery. Every event must arrive (the section fails when
   none arrived for 30 s). When the worker cannot keep up with the rate, the figures are
   mostly backlog; the report then says so, with the rate the worker did sustain.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from app.core.topic_specs import JOB_LIFECYCLE
from app.worker.rabbit_topology import JOB_EVENTS, JOB_EVENTS_API, JOB_EVENTS_AUDIT
from bench.context import (BenchContext, BenchError, bridged_worker, event_mix, figure, fmt, make_events,
                           publish_paced, ratio)

TITLE = "RabbitMQ bridge"
EXCHANGE = JOB_EVENTS
WORK_QUEUES = (JOB_EVENTS_API, JOB_EVENTS_AUDIT)
#: Throughput: events per repetition (each path), and repetitions.
FULL_PUBLISH, QUICK_PUBLISH = 1_500, 300
FULL_REPS, QUICK_REPS = 3, 2
WARM_UP = 200
#: Latency: the fixed rate and how long it is held.
RATE = 1_000
FULL_SECONDS, QUICK_SECONDS = 5.0, 1.0
TICK_S = 0.01
#: After the last send, wait for the rest while they keep arriving: fail when none arrived for
#: STALL_S, or when the last send is MAX_DRAIN_S ago.
STALL_S, MAX_DRAIN_S = 30.0, 240.0
#: The worker is stopped with SIGTERM, killed if still running after this (it need not drain:
#: the run's topics are deleted at the end).
WORKER_STOP_TIMEOUT_S = 5.0


# -- the vhost ------------------------------------------------------------------------------
class _Management:
    """The management API of the RabbitMQ named by an AMQP URL (port + 10000, same credentials)."""

    def __init__(self, amqp_url: str) -> None:
        parts = urlsplit(amqp_url)
        self.amqp = parts
        self.user = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        self.base = f"http://{parts.hostname or '127.0.0.1'}:{(parts.port or 5672) + 10000}"
        self.auth = "Basic " + base64.b64encode(f"{self.user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None) -> int:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", self.auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            raise BenchError(f"RabbitMQ management {method} {path}: HTTP {exc.code} "
                             f"{exc.read()[:300]!r}") from exc
        except OSError as exc:
            raise BenchError(f"RabbitMQ management API at {self.base} unreachable: {exc!r}") from exc

    def create_vhost(self, name: str) -> str:
        """Create ``name`` with full permissions for the URL's user; its AMQP URL."""
        vhost = quote(name, safe="")
        self.request("PUT", f"/api/vhosts/{vhost}", {"description": "cosmic bench (bridge)"})
        self.request("PUT", f"/api/permissions/{vhost}/{quote(self.user, safe='')}",
                     {"configure": ".*", "write": ".*", "read": ".*"})
        a = self.amqp
        return urlunsplit((a.scheme, a.netloc, "/" + vhost, a.query, ""))

    def delete_vhost(self, name: str) -> None:
        self.request("DELETE", f"/api/vhosts/{quote(name, safe='')}")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- 1. publish throughput --------------------------------------------------------------------
async def _bare_publish(exchange: Any, prepared: Sequence[tuple[str, Any]]) -> None:
    """One message at a time on a confirm channel, each confirm awaited (and checked)."""
    import aiormq

    for routing_key, message in prepared:
        confirmation = await exchange.publish(message, routing_key=routing_key)
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BenchError(f"RabbitMQ did not ack a bare publish: {confirmation!r}")


async def _bridge_publish(bridge: Any, events: Sequence[Any]) -> None:
    for event in events:
        await bridge.publish(event)


async def _purge(channel: Any) -> None:
    for name in WORK_QUEUES:
        queue = await channel.get_queue(name, ensure=False)
        await queue.purge()


async def _throughput(ctx: BenchContext, *, vhost_url: str, n: int, reps: int) -> dict[str, Any]:
    import aio_pika

    from app.worker.rabbit_bridge import RabbitBridge, event_message
    from app.worker.rabbit_topology import declare_topology, route_for

    from bench.ingest import cpu_seconds, rabbitmq_pids

    runs: dict[str, list[float]] = {"bare": [], "bridge": [], "batch": []}
    #: CPU µs per message of RabbitMQ's Erlang VM (the local stack's; empty for another server)
    #: and of this process (the publisher), per repetition and path.
    cpu: dict[str, dict[str, list[float]]] = {path: {"rabbitmq": [], "publisher": []} for path in runs}
    rabbit = rabbitmq_pids(ctx)
    mix: dict[str, int] = {}
    connection = await aio_pika.connect(vhost_url, client_properties={"connection_name": "cosmic-bench bare"})
    bridge = RabbitBridge()
    bridge.url = vhost_url
    retries_before = 0
    try:
        await declare_topology(connection, url=vhost_url, queue_type=ctx.settings.rabbitmq_queue_type,
                               retry_delays=ctx.settings.retry_delays)
        admin_channel = await connection.channel()
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE, ensure=False)
        await bridge.start()  # connects in the background: declares the topology again (idempotent)
        try:
            await asyncio.wait_for(bridge.ready(), 30)
        except asyncio.TimeoutError:
            pass
        if not bridge.connected:
            raise BenchError(f"the bridge did not connect to {_redacted(vhost_url)}")

        def prepare(events: Sequence[Any]) -> list[tuple[str, Any]]:
            return [(route_for(e)[1], event_message(e)) for e in events]

        # warm-up (untimed): both paths
        await _bare_publish(exchange, prepare(make_events(WARM_UP)))
        await _bridge_publish(bridge, make_events(WARM_UP))
        retries_before = bridge.publish_retries
        for rep in range(reps):
            events = make_events(n, seed=rep)
            mix = event_mix(events)
            if any(route_for(e)[0] != EXCHANGE for e in events):
                raise BenchError("a job-lifecycle event is not routed to job.events")
            prepared = prepare(events)  # the same bodies and properties, built before the clock
            paths = ("bare", "bridge", "batch")
            order = paths[rep % 3:] + paths[:rep % 3]
            for path in order:
                await _purge(admin_channel)
                gc.collect()
                rabbit_before = cpu_seconds(rabbit[0]) if rabbit else None
                own_before = time.process_time()
                start = time.perf_counter()
                if path == "bare":
                    await _bare_publish(exchange, prepared)
                elif path == "bridge":
                    await _bridge_publish(bridge, events)
                else:
                    await bridge.publish_events(list(events), window=ctx.settings.rabbitmq_confirm_window)
                elapsed = time.perf_counter() - start
                cpu[path]["publisher"].append((time.process_time() - own_before) * 1e6 / n)
                rabbit_after = cpu_seconds(rabbit[0]) if rabbit else None
                if rabbit_before is not None and rabbit_after is not None:
                    cpu[path]["rabbitmq"].append((rabbit_after - rabbit_before) * 1e6 / n)
                rate = n / elapsed
                runs[path].append(rate)
                ctx.log(f"bridge: publish {path} {rep + 1}/{reps}: {n:,} confirmed in {elapsed:.2f} s "
                        f"= {rate:,.0f} events/s")
        retries = bridge.publish_retries - retries_before
        await _purge(admin_channel)
    finally:
        await bridge.stop()
        await connection.close()
    return {"runs": runs, "cpu": cpu, "mix": mix, "bridge_retries": retries}


# -- 2. Kafka → RabbitMQ latency -----------------------------------------------------------
def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class _Tap:
    """A private queue on ``job.events`` (``job.#``): arrival time of every message_id."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.messages = 0
        self.last_arrival = time.perf_counter()
        self._want: set[str] = set()
        self._all_in = asyncio.Event()

    def expect(self, ids: set[str]) -> None:
        self._want = ids
        self._all_in.clear()
        if ids <= self.arrived.keys():
            self._all_in.set()

    async def on_message(self, message: Any) -> None:
        now = time.perf_counter()
        self.messages += 1
        key = message.message_id
        if key in self.arrived:
            self.duplicates += 1
            return
        self.arrived[key] = now
        self.last_arrival = now
        if key in self._want and self._want <= self.arrived.keys():
            self._all_in.set()

    async def wait(self, timeout: float, *, stall: float | None = None) -> bool:
        """True once every expected id arrived; False after ``timeout`` s, or after ``stall`` s
        without any new arrival."""
        deadline = time.perf_counter() + timeout
        while not self._all_in.is_set():
            now = time.perf_counter()
            if now >= deadline or (stall is not None and now - self.last_arrival >= stall):
                return False
            try:
                await asyncio.wait_for(self._all_in.wait(), min(1.0, deadline - now))
            except asyncio.TimeoutError:
                pass
        return True


async def _latency(ctx: BenchContext, *, vhost_url: str, seconds: float) -> dict[str, Any]:
    import aio_pika

    from app.worker.publisher import EventPublisher

    settings, codecs, worker = await bridged_worker(ctx, name="bridge", vhost_url=vhost_url)
    tap = _Tap()
    connection = await aio_pika.connect(vhost_url, client_properties={"connection_name": "cosmic-bench tap"})
    publisher = EventPublisher(settings=settings, codecs=codecs)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        queue = await channel.declare_queue(f"bench-bridge-tap-{uuid.uuid4().hex[:8]}", exclusive=True,
                                            auto_delete=True)
        await queue.bind(EXCHANGE, routing_key="job.#")
        await queue.consume(tap.on_message, no_ack=True)
        await publisher.start()
        ready_s = await asyncio.to_thread(worker.start)
        ctx.log(f"bridge: worker ready in {ready_s:.1f} s at {worker.base_url}")

        # warm-up: a few events through the whole path (bridge connected, partitions assigned)
        warm = make_events(40, seed=99)
        tap.expect({e.event_id for e in warm})
        warm_start = time.perf_counter()
        await publisher.publish_many(warm)
        if not await tap.wait(120):
            raise BenchError(f"bridge: warm-up events did not reach RabbitMQ in 120 s:\n{worker.log_tail()}")
        ctx.log(f"bridge: warm-up events through the worker in {time.perf_counter() - warm_start:.1f} s")

        events = make_events(int(RATE * seconds), seed=1)
        tap.expect({e.event_id for e in events})
        paced = await publish_paced(publisher=publisher, events=events, rate=RATE, tick_s=TICK_S)
        sent_at, sent, started, send_s = paced.sent_at, paced.sent, paced.started, paced.seconds
        achieved, max_in_flight = paced.rate, paced.max_in_flight
        ctx.log(f"bridge: {sent:,} events published to Kafka (acked) in {send_s:.2f} s = {achieved:,.0f} events/s "
                f"(at most {max_in_flight} batches in flight)")
        all_in = await tap.wait(MAX_DRAIN_S, stall=STALL_S)
        drained_s = time.perf_counter() - started
        arrived = [eid for eid in sent_at if eid in tap.arrived]
        if not all_in or len(arrived) != sent:
            raise BenchError(f"bridge: only {len(arrived):,} of {sent:,} events reached RabbitMQ (none for "
                             f"{STALL_S:.0f} s, or {MAX_DRAIN_S:.0f} s after the last send):\n{worker.log_tail()}")
    finally:
        stop_start = time.perf_counter()
        await publisher.stop()
        await asyncio.to_thread(worker.stop, timeout=WORKER_STOP_TIMEOUT_S)
        await connection.close()
        ctx.log(f"bridge: worker stopped in {time.perf_counter() - stop_start:.1f} s")
    latencies = [(tap.arrived[eid] - sent_at[eid]) * 1000 for eid in sent_at]
    # the worker's sustained bridging rate: events over first send → last arrival
    delivered_eps = sent / (max(tap.arrived[eid] for eid in sent_at) - started)
    result = {
        "events": sent, "arrived": len(arrived), "duplicates": tap.duplicates,
        "other_messages": len(tap.arrived.keys() - sent_at.keys() - {e.event_id for e in warm}),
        "rate": achieved, "send_s": send_s, "delivered_eps": delivered_eps, "drained_s": drained_s,
        "worker_ready_s": ready_s,
        "p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
        "p99": _percentile(latencies, 99), "max": max(latencies), "min": min(latencies),
        "topic": settings.topic_prefix + JOB_LIFECYCLE, "app_id": settings.app_id,
    }
    ctx.log(f"bridge: {len(arrived):,}/{sent:,} arrived; latency p50 {result['p50']:.1f} ms, "
            f"p95 {result['p95']:.1f} ms, p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms")
    return result


# -- the section ------------------------------------------------------------------------------
async def run(*, ctx: BenchContext) -> dict[str, Any]:
    n = QUICK_PUBLISH if ctx.quick else FULL_PUBLISH
    reps = QUICK_REPS if ctx.quick else FULL_REPS
    seconds = QUICK_SECONDS if ctx.quick else FULL_SECONDS
    management = _Management(ctx.settings.rabbitmq_url)
    vhost = f"cosmic-bench-bridge-{uuid.uuid4().hex}"
    section_start = time.perf_counter()
    vhost_url = await asyncio.to_thread(management.create_vhost, vhost)
    ctx.log(f"bridge: vhost {vhost!r} on {_redacted(vhost_url)}")
    try:
        ctx.log(f"bridge: vhost created in {time.perf_counter() - section_start:.1f} s")
        throughput = await _throughput(ctx, vhost_url=vhost_url, n=n, reps=reps)
        ctx.log(f"bridge: publish part done at {time.perf_counter() - section_start:.1f} s")
        latency = await _latency(ctx, vhost_url=vhost_url, seconds=seconds)
    finally:
        try:
            await asyncio.to_thread(management.delete_vhost, vhost)
        except BenchError as exc:
            ctx.log(f"bridge: could not delete vhost {vhost!r}: {exc}")

    runs = throughput["runs"]
    figures: dict[str, Any] = {
        "bare_confirmed_eps": figure(label="a. bare aio-pika, confirm awaited per message", unit="events/s",
                                     runs=runs["bare"], digits=0),
        "bridge_confirmed_eps": figure(label="b. `RabbitBridge.publish` (the bridge's path)", unit="events/s",
                                       runs=runs["bridge"], digits=0),
    }
    figures["batch_confirmed_eps"] = figure(
        label=f"c. `RabbitBridge.publish_events` (the agents' batch, {ctx.settings.rabbitmq_confirm_window} "
              "confirms outstanding)", unit="events/s", runs=runs["batch"], digits=0)
    figures["bridge_vs_bare"] = ratio(label="b / a", numerator=figures["bridge_confirmed_eps"],
                                      denominator=figures["bare_confirmed_eps"])
    figures["batch_vs_bare"] = ratio(label="c / a", numerator=figures["batch_confirmed_eps"],
                                     denominator=figures["bare_confirmed_eps"])
    for pct in ("p50", "p95", "p99"):
        figures[f"latency_{pct}_ms"] = figure(label=f"Kafka → queue latency {pct.upper()} at {RATE:,} events/s",
                                              unit="ms", runs=[latency[pct]])
    figures["latency_max_ms"] = figure(label="Kafka → queue latency max", unit="ms", runs=[latency["max"]])
    figures["worker_bridged_eps"] = figure(label="worker: events bridged per second (first send → last arrival)",
                                           unit="events/s", runs=[latency["delivered_eps"]], digits=0)
    figures["delivered"] = figure(label="events delivered to the queue", unit="events",
                                  runs=[latency["arrived"]], digits=0)
    return {
        "params": {
            "vhost": vhost, "exchange": EXCHANGE, "routed_to": list(WORK_QUEUES),
            "queue_type": ctx.settings.rabbitmq_queue_type, "delivery_mode": "persistent",
            "publish_events_per_repetition": n, "publish_repetitions": reps, "in_flight": 1,
            "batch_window": ctx.settings.rabbitmq_confirm_window,
            "event_mix": throughput["mix"], "bridge_publish_retries": throughput["bridge_retries"],
            "cpu_us_per_message": throughput["cpu"],
            "latency_target_rate": RATE, "latency_seconds": seconds, "latency_batch": max(1, int(RATE * TICK_S)),
            "latency_topic": latency["topic"], "worker_app_id": latency["app_id"],
            "worker_ready_s": round(latency["worker_ready_s"], 1),
        },
        "latency": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in latency.items()},
        "figures": figures,
    }


def _median_us(values: list[float] | None) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:,.0f} µs"


def markdown(result: dict[str, Any]) -> str:
    p, f, lat = result["params"], result["figures"], result["latency"]
    lines = [
        f"A fresh vhost on the run's RabbitMQ with the project's topology ({p['queue_type']} queues). "
        f"**Publish throughput with confirms:** {p['publish_events_per_repetition']:,} job-lifecycle events "
        f"per repetition to the `{p['exchange']}` exchange (each routed to "
        f"{' and '.join(f'`{q}`' for q in p['routed_to'])}, {p['delivery_mode']}). (a) and (b) have one "
        "message in flight: every publisher confirm is awaited before the next publish. (a) publishes "
        "pre-built messages — the same bodies, properties and routing keys — on a bare aio-pika "
        "confirm channel; (b) calls a started `RabbitBridge` service's `publish(event)` "
        "(`route_for` + JSON encoding + bounded publish + ack check). (c) is how the agents "
        "publish a batch: `RabbitBridge.publish_events` of the whole repetition, one write per window "
        f"of {p.get('batch_window', 256)} messages, returning once every one is confirmed. Median of "
        f"{p['publish_repetitions']} repetitions (rotating order), range in brackets.",
        "",
        "| path | confirmed throughput (median) | range | RabbitMQ CPU per message | publisher CPU per message |",
        "| --- | --- | --- | --- | --- |",
    ]
    cpu = p.get("cpu_us_per_message") or {}
    for key, path in (("bare_confirmed_eps", "bare"), ("bridge_confirmed_eps", "bridge"),
                      ("batch_confirmed_eps", "batch")):
        fig = f[key]
        lines.append(f"| {fig['label']} | {fmt(fig['value'], fig['unit'])} | "
                     f"{fig['min']:,.0f}–{fig['max']:,.0f} events/s | "
                     f"{_median_us(cpu.get(path, {}).get('rabbitmq'))} | {_median_us(cpu.get(path, {}).get('publisher'))} |")
    lines += [
        "",
        f"b / a: {fmt(f['bridge_vs_bare']['value'], 'ratio')}; c / a: {fmt(f['batch_vs_bare']['value'], 'ratio')}. "
        "With one message in flight, throughput is bounded by the confirm round trip (RabbitMQ confirms "
        "a persistent message once the queues have it on disk); a window of confirms outstanding is "
        "what lifts (c) above it, and (c) is the ceiling of one agent's copies. CPU per message: user + system "
        "CPU of RabbitMQ's Erlang VM (the local stack's, from `/proc/<pid>/stat`, 10 ms ticks) and of the bench "
        "process over each timed repetition, divided by its messages (median over repetitions) — what a "
        "persistent copy routed to two queues costs the machine, whoever publishes it.",
        "",
        f"**Kafka → queue latency:** a real worker (own app id and topics) bridges "
        f"`job-lifecycle`; the bench publishes to Kafka with `EventPublisher` at "
        f"{p['latency_target_rate']:,} events/s ({lat['rate']:,.0f} achieved; a batch of "
        f"{p['latency_batch']} every 10 ms, each batch's acks awaited in its own task) for {p['latency_seconds']:g} s and consumes a private "
        "queue bound to `job.events` with `job.#` in the bench process. Latency: arrival in that "
        "consumer minus the moment the event's batch was handed to the publisher (matched by "
        "`message_id` = `event_id`) — Kafka produce, the worker's consumer, the bridge's confirmed "
        "publish and delivery. One run (no repetitions).",
        "",
        "| events sent | arrived | min | P50 | P95 | P99 | max | bridged by the worker |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {lat['events']:,} | {lat['arrived']:,} | {lat['min']:,.1f} ms | {lat['p50']:,.1f} ms | "
        f"{lat['p95']:,.1f} ms | {lat['p99']:,.1f} ms | {lat['max']:,.1f} ms | {lat['delivered_eps']:,.0f} events/s |",
        "",
        "\"Bridged by the worker\": events sent over the time from the first send to the last "
        "arrival — the rate the worker's copies sustained.",
    ]
    target, bridged = p["latency_target_rate"], lat["delivered_eps"]
    confirmed = f.get("batch_confirmed_eps", f["bridge_confirmed_eps"])["value"]
    if bridged < 0.95 * target:
        why = []
        if confirmed < target:
            why.append(f"the bridge's batched publish confirms only about {fmt(confirmed, 'events/s')} (c, above)")
        if bridged < 0.8 * confirmed:
            why.append(f"the bridge's batched publish alone confirms about {fmt(confirmed, 'events/s')} (c, above), "
                       "so the pace is set elsewhere in the worker (its other agents on `job-lifecycle` share its "
                       "event loop and consumer)")
        lines += ["", f"**The worker bridged {bridged:,.0f} events/s, below the target rate of "
                      f"{target:,} events/s**: it fell behind while the events were sent, so these latencies "
                      "are mostly the backlog's queueing delay (they grow with the run's length) rather than "
                      "a per-event cost" + (": " + "; ".join(why) if why else "") + "."]
    if lat.get("duplicates"):
        lines += ["", f"{lat['duplicates']:,} duplicate deliveries (same `message_id`) were seen and ignored."]
    return "\n".join(lines)
