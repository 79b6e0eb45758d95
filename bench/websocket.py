"""Websocket fan-out: end-to-end latency and memory per connection on a real worker.

For each client count (500, 2,000 and 10,000; ``--quick``: 200), a separate client process (so the
bench's own CPU is not the worker's) opens that many ``/ws`` connections — a minimal
asyncio websocket client, a few kB per connection — each subscribed to the notifications of
one of ``clients / FANOUT`` users, so every event goes to ``FANOUT`` clients. Notifications
are then published at a fixed rate (1,000 events/s; ``--quick`` 200) for a few seconds, each
carrying its send time; the latency of a frame is its arrival time in the client process
minus that send time: Kafka produce + the hub's consumer + fan-out + the socket. Memory per
connection is the growth of the worker's RSS (psutil) from before the clients connect to
when all are subscribed, divided by the count.

``python -m bench.websocket clients`` (spec on stdin) is the client process (internal).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
import statistics
import struct
import sys
import time
import uuid
from typing import Any

TITLE = "Websocket fan-out"
FANOUT = 10
FULL_CLIENTS = (500, 2000, 10000)
QUICK_CLIENTS = (200,)
FULL_RATE, QUICK_RATE = 1000, 200
FULL_SECONDS, QUICK_SECONDS = 10.0, 3.0


# -- the client process --------------------------------------------------------------------
class _Client(asyncio.Protocol):
    """A bare websocket client: handshake, one subscribe, then latency of every event frame."""

    def __init__(self, *, host: str, port: int, token: str, channel: str, stats: "_Stats") -> None:
        self.host, self.port, self.token, self.channel, self.stats = host, port, token, channel, stats
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(  # type: ignore[union-attr]
            f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {self.token}\r\n\r\n"
            .encode())

    def send_text(self, text: str, opcode: int = 1) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.transport.write(header + mask + masked)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.buffer.split(b"\r\n", 1)[0]
            self.buffer = self.buffer[end + 4:]
            if b" 101 " not in status:
                self.stats.failed += 1
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            self.send_text(json.dumps({"type": "subscribe", "channel": self.channel}))
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = struct.unpack_from(">H", self.buffer, 2)[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = struct.unpack_from(">Q", self.buffer, 2)[0], 10
            if len(self.buffer) < start + length:
                return
            payload, self.buffer = self.buffer[start:start + length], self.buffer[start + length:]
            if opcode == 1:
                self.stats.frame(payload)
            elif opcode == 9:
                self.send_text(payload.decode(errors="replace"), opcode=10)
            elif opcode == 8:
                self.stats.closed += 1
                self.transport.close()  # type: ignore[union-attr]


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.subscribed = self.failed = self.closed = 0

    def frame(self, payload: bytes) -> None:
        now = time.time()
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "event":
            self.latencies.append(now - float(frame["event"]["body"]))
        elif kind == "subscribed":
            self.subscribed += 1
        elif kind == "error":
            self.failed += 1


async def _clients_main(*, host: str, port: int, count: int, users: list[str], tokens: list[str]) -> None:
    stats = _Stats()
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(200)

    async def open_one(i: int) -> None:
        async with sem:
            user = users[i % len(users)]
            await loop.create_connection(
                lambda: _Client(host=host, port=port, token=tokens[i % len(tokens)],
                                channel=f"user:{user}:notifications", stats=stats), host, port)

    await asyncio.gather(*(open_one(i) for i in range(count)))
    deadline = time.monotonic() + 300
    while stats.subscribed + stats.failed < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    print(json.dumps({"ready": stats.subscribed, "failed": stats.failed}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the bench says "report"
    print(json.dumps({"latencies": stats.latencies, "closed": stats.closed}), flush=True)


def _client_process_main() -> None:
    spec = json.loads(sys.stdin.readline())  # the first line of stdin: what to open
    asyncio.run(_clients_main(**spec))


# -- the bench section ---------------------------------------------------------------------
def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


async def _measure(*, ctx: Any, worker: Any, publisher: Any, clients: int, rate: int, seconds: float,
                   secret: str) -> dict[str, Any]:
    import psutil

    from app.core.auth import mint_token
    from app.core.models import NotificationSent
    from app.core.timeutil import utc_now
    from bench.context import BenchError

    settings = ctx.settings
    proc = psutil.Process(worker.process.proc.pid)
    users = [f"ws-{ctx.run_id}-{clients}-{n}" for n in range(max(1, clients // FANOUT))]
    token_settings = dataclasses.replace(settings, jwt_secret=secret)
    tokens = [mint_token(settings=token_settings, sub=u, ttl_s=3600) for u in users]
    # each client subscribes to users[i % len(users)] with that user's token
    host, port = "127.0.0.1", worker.port
    rss_before = proc.memory_info().rss
    spec = json.dumps({"host": host, "port": port, "count": clients, "users": users, "tokens": tokens})
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.websocket", "clients",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**28)
    try:
        child.stdin.write(spec.encode() + b"\n")  # type: ignore[union-attr]
        await child.stdin.drain()  # type: ignore[union-attr]
        line = await asyncio.wait_for(child.stdout.readline(), 600)  # type: ignore[union-attr]
        if not line:
            raise BenchError(f"websocket client process exited ({await child.wait()})")
        ready = json.loads(line)
        if ready["ready"] != clients:
            raise BenchError(f"websocket: only {ready['ready']} of {clients} clients subscribed ({ready})")
        await asyncio.sleep(2)  # let the worker settle (heartbeats, GC) before reading its RSS
        rss_after = proc.memory_info().rss
        ctx.log(f"websocket: {clients:,} clients connected; worker RSS {rss_before / 2**20:.0f} → "
                f"{rss_after / 2**20:.0f} MiB")
        total = int(rate * seconds)
        batch = max(1, rate // 100)  # every 10 ms
        client_proc = psutil.Process(child.pid)
        cpu_before = (sum(proc.cpu_times()[:2]), sum(client_proc.cpu_times()[:2]), time.monotonic())
        started = time.monotonic()
        sent = 0
        rng = random.Random(clients)
        while sent < total:
            now = time.time()
            events = [NotificationSent(event_id=str(uuid.uuid4()), event_type="NotificationSent",
                                       timestamp=utc_now(), correlation_id="bench", user_id=rng.choice(users),
                                       schema_version=1, notification_id="n", channel="WEBSOCKET", severity="INFO",
                                       title="bench", body=repr(now), job_id=None)
                      for _ in range(min(batch, total - sent))]
            await publisher.publish_many(events)
            sent += len(events)
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        achieved = sent / (time.monotonic() - started)
        await asyncio.sleep(5)  # the last frames arrive
        window = time.monotonic() - cpu_before[2]
        worker_cpu = (sum(proc.cpu_times()[:2]) - cpu_before[0]) / window * 100
        client_cpu = (sum(client_proc.cpu_times()[:2]) - cpu_before[1]) / window * 100
        child.stdin.write(b"report\n")  # type: ignore[union-attr]
        await child.stdin.drain()  # type: ignore[union-attr]
        report = json.loads(await asyncio.wait_for(child.stdout.readline(), 120))  # type: ignore[union-attr]
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    latencies = [v * 1000 for v in report["latencies"]]
    expected = sent * FANOUT if clients >= FANOUT else sent
    if not latencies:
        raise BenchError(f"websocket: no event reached the {clients} clients")
    ctx.log(f"websocket: {clients:,} clients, {achieved:,.0f} events/s: {len(latencies):,} of {expected:,} frames, "
            f"p50 {statistics.median(latencies):.1f} ms, p99 {_percentile(latencies, 99):.1f} ms; CPU of one core: "
            f"worker {worker_cpu:.0f} %, clients {client_cpu:.0f} %")
    return {"clients": clients, "rate": achieved, "frames": len(latencies), "expected": expected,
            "dropped_connections": report["closed"], "p50": statistics.median(latencies),
            "p95": _percentile(latencies, 95), "p99": _percentile(latencies, 99), "max": max(latencies),
            "memory_per_connection": max(1.0, (rss_after - rss_before) / clients),
            "worker_cpu_pct": worker_cpu, "client_cpu_pct": client_cpu}


async def run(*, ctx: Any) -> dict[str, Any]:
    from app.worker.publisher import EventPublisher
    from app.ops.topic_admin import ensure_topics
    from bench.context import figure
    from bench.worker import BenchWorker

    sizes = QUICK_CLIENTS if ctx.quick else FULL_CLIENTS
    rate = QUICK_RATE if ctx.quick else FULL_RATE
    seconds = QUICK_SECONDS if ctx.quick else FULL_SECONDS
    secret = f"bench-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    await ensure_topics(bootstrap=ctx.settings.kafka_bootstrap, replication_factor=ctx.settings.replication_factor,
                        prefix=ctx.topic_prefix)
    await asyncio.to_thread(ctx.codecs.warm_up)
    worker = BenchWorker(settings=ctx.settings, workdir=ctx.workdir)
    worker.env.update({"COSMIC_JWT_SECRET": secret, "COSMIC_RABBITMQ_BRIDGE_ENABLED": "false"})
    results = []
    publisher = EventPublisher(settings=ctx.settings, codecs=ctx.codecs)
    await publisher.start()
    try:
        ready_s = await asyncio.to_thread(worker.start)
        ctx.log(f"websocket: worker ready in {ready_s:.1f} s at {worker.base_url}")
        for clients in sizes:
            results.append(await _measure(ctx=ctx, worker=worker, publisher=publisher, clients=clients, rate=rate,
                                          seconds=seconds, secret=secret))
    finally:
        await publisher.stop()
        await asyncio.to_thread(worker.stop)
    figures: dict[str, Any] = {}
    for r in results:
        n = r["clients"]
        figures[f"p99_ms_{n}"] = figure(label=f"fan-out latency P99, {n:,} clients", unit="ms", runs=[r["p99"]])
        figures[f"p50_ms_{n}"] = figure(label=f"fan-out latency P50, {n:,} clients", unit="ms", runs=[r["p50"]])
        figures[f"memory_per_connection_kib_{n}"] = figure(
            label=f"worker memory per connection, {n:,} clients", unit="KiB",
            runs=[r["memory_per_connection"] / 1024])
        figures[f"delivered_{n}"] = figure(label=f"frames delivered, {n:,} clients", unit="events",
                                           runs=[r["frames"]], digits=0)
    return {"params": {"clients": list(sizes), "target_rate": rate, "seconds": seconds, "fanout": FANOUT},
            "runs": results, "figures": figures}


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"One worker; per client count, a separate client process opens the connections, each "
        f"subscribed to one user's notifications ({p['fanout']} clients per user, so every event "
        f"is sent to {p['fanout']} clients); notifications are published at {p['target_rate']:,} events/s "
        f"for {p['seconds']:g} s. Latency: publish → frame parsed in the client process (Kafka produce, "
        "the hub's consumer, fan-out, socket). Memory: growth of the worker's RSS per connection, "
        "connected and subscribed. CPU: share of one core used by the worker and by the client "
        "process while publishing (the worker also runs its agents on these notifications). "
        "One run per size (no repetitions).",
        "",
        "| clients | events/s achieved | frames delivered / expected | P50 | P95 | P99 | max | memory per connection "
        "| worker CPU | client process CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        lines.append(f"| {r['clients']:,} | {r['rate']:,.0f} | {r['frames']:,} / {r['expected']:,} | "
                     f"{r['p50']:.1f} ms | {r['p95']:.1f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms | "
                     f"{r['memory_per_connection'] / 1024:.1f} KiB | {r['worker_cpu_pct']:.0f} % | "
                     f"{r['client_cpu_pct']:.0f} % |")
    by_clients = {r["clients"]: r for r in result["runs"]}
    lines.append("")
    for clients, limit, whose in ((500, 200.0, "seed"), (10_000, 100.0, "ours")):
        run = by_clients.get(clients)
        if run is not None:
            verdict = "met" if run["p99"] < limit else "**not met**"
            lines.append(f"- Target ({whose}) {clients:,} clients, P99 < {limit:.0f} ms: {run['p99']:.1f} ms, {verdict}.")
    lines += [
        "",
        "The worker runs with its garbage-collector policy on (`COSMIC_GC_TUNING`, `app/worker/gc_policy.py`). "
        "Without it, 10,000 connections make the worker's heap over a million tracked objects and a "
        "full collection stops the event loop for 0.7–1.1 s (logged with a `gc.callbacks` probe in the "
        "worker); one such pause during the 10 s of publishing put P99 at 1.0–1.4 s (three runs on this "
        "machine on 2026-11-24), P99 3.1 s in an earlier run with the old decoder. With the policy no full "
        "collection ran while publishing. The remaining tail is the machine: the worker, the client process, "
        "the publisher and the Kafka broker share 2 cores.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["clients"]:
        _client_process_main()
    else:
        print("internal: python -m bench.websocket clients < SPEC (run the bench with python -m bench)",
              file=sys.stderr)
        sys.exit(2)
