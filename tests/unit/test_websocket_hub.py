"""The websocket hub without a broker or sockets: channels, authorization, fan-out, slow
clients, client frames, and the recovery hand-over (no gap, no duplicate)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

import app.worker.websocket_hub as hub_module
from app.core.auth import Principal
from app.core.models import JobMetricsSample, SystemAlert, SystemHealthReport
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.core.validation import event_to_json
from app.ops.demo import lifecycle_events
from app.worker.main import codecs
from app.worker.observability import WS_CONNECTIONS, WS_DROPPED_SLOW
from app.worker.websocket_hub import (
    CLOSE_SLOW,
    ChannelError,
    Connection,
    WebsocketHub,
    channels_of,
    handle_frame,
    parse_channel,
)
from support.polling import wait_until_async

PREFIX = "t-"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes
    key: bytes = b""


class FakeSocket:
    """What a Connection writes to; ``block`` makes every send hang (a client that stopped reading)."""

    def __init__(self, *, block: bool = False) -> None:
        self.block = block
        self.sent: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None

    async def send(self, text: str) -> None:
        if self.block:
            await asyncio.Event().wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def connect(hub: WebsocketHub, *, user: str = "alice", operator: bool = False, queue: int = 100,
            block: bool = False, token: str = "tok") -> tuple[Connection, FakeSocket]:
    sock = FakeSocket(block=block)
    conn = Connection(principal=Principal(user_id=user, role="operator" if operator else None, operator=operator),
                      send=sock.send, close=sock.close, queue_size=queue, token=token)
    hub.attach(conn)
    conn.spawn(conn.run_sender())
    return conn, sock


async def settle(predicate=lambda: True, *, timeout: float = 5.0) -> None:  # noqa: ANN001
    async def after_a_tick() -> bool:
        await asyncio.sleep(0.01)
        return predicate()

    await wait_until_async(after_a_tick, timeout=timeout, interval=0, what="the hub settled")


def lifecycle(job_id: str, user_id: str) -> list:
    return lifecycle_events(job_id=job_id, user_id=user_id, rng=random.Random(3), outcome="COMPLETED")


def metric(job_id: str, n: int) -> JobMetricsSample:
    return JobMetricsSample(event_id=str(uuid.uuid4()), event_type="JobMetricsSample", timestamp=utc_now(),
                            correlation_id="c", user_id=None, schema_version=1, job_id=job_id, node="n1",
                            cpu_pct=float(n), gpu_pct=0.0, memory_gb=1.0, io_mb_s=0.0, execution_time_s=float(n))


def record(topic: str, event: Any, *, partition: int = 0, offset: int = 0) -> Record:
    return Record(topic=PREFIX + topic, partition=partition, offset=offset, timestamp=1_700_000_000_000 + offset,
                  value=codecs.for_topic(topic).encode(event))


@pytest.fixture
def hub(memory_registry):  # noqa: ANN001
    lookups: list[tuple[str, str]] = []
    owners = {"known-elsewhere": "alice"}

    async def lookup(job_id: str, token: str) -> str | None:
        lookups.append((job_id, token))
        return owners.get(job_id)

    h = WebsocketHub(settings=Settings(topic_prefix=PREFIX), codecs=codecs, owner_lookup=lookup)
    h.positioned.set()
    h.lookups = lookups  # type: ignore[attr-defined]
    yield h
    for conn in list(h.connections):
        conn.finish()


def types(sock: FakeSocket) -> list[str]:
    return [f["type"] for f in sock.sent]


# -- channels ------------------------------------------------------------------------------
def test_channel_names() -> None:
    assert parse_channel("job:J-1:status").subject == "J-1"
    assert parse_channel("job:a:b:metrics").subject == "a:b"
    assert parse_channel("user:u1:notifications").topic == "notifications"
    assert parse_channel("system:alerts").kind == "system_alerts"
    assert parse_channel("jobs:all").topic == "job-lifecycle"
    for bad in ("job::status", "job:J", "jobs:some", "user:u1", "user: u1 :notifications", "", "x" * 400):
        with pytest.raises(ChannelError) as info:
            parse_channel(bad)
        assert info.value.code == "unknown_channel"


def test_events_map_to_their_channels() -> None:
    submitted = lifecycle("J", "alice")[0]
    assert channels_of("job-lifecycle", event_to_json(submitted)) == ["job:J:status", "jobs:all"]
    assert channels_of("job-metrics", event_to_json(metric("J", 1))) == ["job:J:metrics"]
    alert = SystemAlert(event_id=str(uuid.uuid4()), event_type="SystemAlert", timestamp=utc_now(), correlation_id="c",
                        user_id=None, schema_version=1, alert_id="a", component="w", rule="lag", severity="WARNING",
                        state="FIRING", message="m", metrics={})
    report = SystemHealthReport(event_id=str(uuid.uuid4()), event_type="SystemHealthReport", timestamp=utc_now(),
                                correlation_id="c", user_id=None, schema_version=1, component="w", status="HEALTHY",
                                metrics={})
    assert channels_of("system-health", event_to_json(alert)) == ["system:alerts"]
    assert channels_of("system-health", event_to_json(report)) == []


# -- authorization -------------------------------------------------------------------------
async def test_authorization_rules(hub) -> None:  # noqa: ANN001
    alice = Principal(user_id="alice", role=None, operator=False)
    operator = Principal(user_id="op", role="operator", operator=True)
    await hub.authorize(alice, parse_channel("user:alice:notifications"))
    await hub.authorize(alice, parse_channel("system:alerts"))
    await hub.authorize(operator, parse_channel("jobs:all"))
    await hub.authorize(operator, parse_channel("user:bob:notifications"))
    for name in ("user:bob:notifications", "jobs:all", "job:never-seen:status"):
        with pytest.raises(ChannelError) as info:
            await hub.authorize(alice, parse_channel(name), token="alice-token")
        assert info.value.code == "forbidden" and info.value.channel == name
    assert hub.lookups == [("never-seen", "alice-token")]  # unknown job: asked once, with the caller's token

    # owners learned from the job-lifecycle stream
    for i, event in enumerate(lifecycle("J1", "alice")):
        hub.handle_record(record("job-lifecycle", event, offset=i))
    await hub.authorize(alice, parse_channel("job:J1:status"))
    await hub.authorize(alice, parse_channel("job:J1:metrics"))
    with pytest.raises(ChannelError):
        await hub.authorize(Principal(user_id="bob", role=None, operator=False), parse_channel("job:J1:status"))
    # a job the hub has not seen but the job route knows
    await hub.authorize(alice, parse_channel("job:known-elsewhere:status"), token="t")
    assert hub.owners["known-elsewhere"] == "alice"


# -- fan-out -------------------------------------------------------------------------------
async def test_fan_out_serializes_once_per_channel(hub, monkeypatch) -> None:  # noqa: ANN001
    calls: list[str] = []
    real = hub_module.event_frame

    def counting(**kwargs: Any) -> str:
        calls.append(kwargs["channel"])
        return real(**kwargs)

    monkeypatch.setattr(hub_module, "event_frame", counting)
    clients = [connect(hub, user="op", operator=True) for _ in range(5)]
    for conn, _ in clients:
        await hub.subscribe(conn, "jobs:all")
        await hub.subscribe(conn, "job:J2:status")
    events = lifecycle("J2", "alice")
    for i, event in enumerate(events):
        hub.handle_record(record("job-lifecycle", event, partition=4, offset=i))
    await settle(lambda: all(len(s.sent) == 2 + 2 * len(events) for _, s in clients))
    assert calls == [c for _ in events for c in ("job:J2:status", "jobs:all")]  # once per channel, not per client
    first = clients[0][1].sent
    assert all(s.sent == first for _, s in clients)
    frames = [f for f in first if f["type"] == "event" and f["channel"] == "job:J2:status"]
    assert [f["event"]["event_id"] for f in frames] == [e.event_id for e in events]
    assert frames[0]["position"] == {"topic": PREFIX + "job-lifecycle", "partition": 4, "offset": 0}
    assert frames[0]["timestamp"] == 1_700_000_000_000 and frames[0]["event"]["job_id"] == "J2"


async def test_unsubscribe_and_disconnect_stop_delivery(hub) -> None:  # noqa: ANN001
    before = WS_CONNECTIONS._value.get()
    conn, sock = connect(hub, user="op", operator=True)
    assert WS_CONNECTIONS._value.get() == before + 1
    await hub.subscribe(conn, "job:J3:metrics")
    hub.handle_record(record("job-metrics", metric("J3", 1), offset=0))
    hub.unsubscribe(conn, "job:J3:metrics")
    hub.handle_record(record("job-metrics", metric("J3", 2), offset=1))
    await settle(lambda: len(sock.sent) == 3)
    await settle()
    assert types(sock) == ["subscribed", "event", "unsubscribed"]
    assert [f for f in sock.sent if f["type"] == "event"][0]["event"]["cpu_pct"] == 1.0
    with pytest.raises(ChannelError):
        hub.unsubscribe(conn, "job:J3:metrics")
    conn.finish()
    assert WS_CONNECTIONS._value.get() == before and not hub.subscribers


async def test_slow_client_is_closed_and_never_slows_others(hub) -> None:  # noqa: ANN001
    dropped = WS_DROPPED_SLOW._value.get()
    slow, slow_sock = connect(hub, user="op", operator=True, queue=3, block=True)
    fast, fast_sock = connect(hub, user="op", operator=True, queue=3)
    await hub.subscribe(slow, "job:J4:metrics")
    await hub.subscribe(fast, "job:J4:metrics")
    for i in range(10):
        hub.handle_record(record("job-metrics", metric("J4", i), offset=i))
        await asyncio.sleep(0.01)  # the fast client's sender keeps up
    await settle(lambda: slow_sock.closed_with is not None)
    assert slow.closed and slow.close_code == CLOSE_SLOW and slow_sock.closed_with[0] == CLOSE_SLOW
    assert WS_DROPPED_SLOW._value.get() == dropped + 1
    assert slow not in hub.connections and list(hub.subscribers["job:J4:metrics"]) == [fast]
    await settle(lambda: len(fast_sock.sent) == 11)
    assert [f["event"]["cpu_pct"] for f in fast_sock.sent if f["type"] == "event"] == [float(i) for i in range(10)]


async def test_undecodable_records_are_skipped(hub) -> None:  # noqa: ANN001
    conn, sock = connect(hub, user="op", operator=True)
    await hub.subscribe(conn, "jobs:all")
    hub.handle_record(Record(topic=PREFIX + "job-lifecycle", partition=0, offset=0, timestamp=0, value=b"junk"))
    hub.handle_record(record("job-lifecycle", lifecycle("J5", "alice")[0], offset=1))
    await settle(lambda: len(sock.sent) == 2)
    assert types(sock) == ["subscribed", "event"] and hub.decode_errors == 1


# -- client frames -------------------------------------------------------------------------
async def test_client_frames_are_answered_or_refused(hub) -> None:  # noqa: ANN001
    conn, sock = connect(hub)
    for text in ("not json", "[1, 2]", '{"no": "type"}', '{"type": "dance"}', '{"type": "subscribe"}',
                 '{"type": "auth", "token": "x"}', '{"type": "subscribe", "channel": "weather:today"}',
                 '{"type": "subscribe", "channel": "user:bob:notifications"}', '{"type": "ping", "id": 7}',
                 '{"type": "subscribe", "channel": "user:alice:notifications", "resume": "yesterday"}',
                 '{"type": "subscribe", "channel": "user:alice:notifications", '
                 '"resume": [{"topic": "t-job-lifecycle", "partition": 0, "offset": 1}]}',
                 '{"type": "subscribe", "channel": "user:alice:notifications", '
                 '"resume": [{"topic": "t-notifications", "partition": 99, "offset": 1}]}',
                 '{"type": "subscribe", "channel": "user:alice:notifications"}'):
        await handle_frame(hub, conn, text)
    await settle(lambda: len(sock.sent) == 13)
    codes = [(f["type"], f.get("code"), f.get("channel")) for f in sock.sent]
    assert codes == [
        ("error", "bad_frame", None), ("error", "bad_frame", None), ("error", "bad_frame", None),
        ("error", "bad_frame", None), ("error", "bad_frame", None), ("error", "bad_frame", None),
        ("error", "unknown_channel", "weather:today"), ("error", "forbidden", "user:bob:notifications"),
        ("pong", None, None),
        ("error", "bad_frame", "user:alice:notifications"), ("error", "bad_frame", "user:alice:notifications"),
        ("error", "bad_frame", "user:alice:notifications"),
        ("subscribed", None, "user:alice:notifications"),
    ]
    assert sock.sent[8]["id"] == 7 and "not JSON" in sock.sent[0]["message"]
    assert not conn.closed  # refusals never close the connection


# -- recovery ------------------------------------------------------------------------------
class FakeReader:
    """Partition logs in memory; ``gate`` holds the read until the test releases it."""

    def __init__(self, logs: dict[tuple[str, int], list[Record]], *, begin: int = 0,
                 gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.logs, self.begin, self.gate, self.fail = logs, begin, gate, fail
        self.closed = False

    async def bounds(self, tps):  # noqa: ANN001, ANN201
        if self.fail:
            raise ConnectionError("kafka unreachable")
        return ({tp: self.begin for tp in tps}, {tp: len(self.logs.get(tp, [])) for tp in tps})

    async def read(self, tp, start, end):  # noqa: ANN001, ANN201
        if self.gate is not None:
            await self.gate.wait()
        for rec in self.logs.get(tp, [])[start:end]:
            yield rec

    async def close(self) -> None:
        self.closed = True


def metrics_log(topic_partition: tuple[str, int], n: int) -> list[Record]:
    """Offsets 0..n-1 of job-metrics partition; every third record is another job's."""
    return [record("job-metrics", metric("J6" if i % 3 else "other", i), partition=topic_partition[1], offset=i)
            for i in range(n)]


async def test_recovery_then_live_without_gap_or_duplicate(hub) -> None:  # noqa: ANN001
    tp = (PREFIX + "job-metrics", 2)
    log = metrics_log(tp, 12)
    gate = asyncio.Event()
    reader = FakeReader({tp: log[:10]}, gate=gate)  # the end snapshot: offset 10
    hub.reader_factory = lambda: reader
    conn, sock = connect(hub, user="op", operator=True)
    await handle_frame(hub, conn, json.dumps({"type": "subscribe", "channel": "job:J6:metrics",
                                              "resume": [{"topic": tp[0], "partition": 2, "offset": 3}]}))
    # while the recovery reads, the live reader (lagging behind the end snapshot) delivers 8
    hub.handle_record(log[8])
    gate.set()
    await settle(lambda: "recovered" in types(sock))
    for rec in log[9:]:  # then 9 (already sent by the recovery), 10 and 11 (new)
        hub.handle_record(rec)
    await settle(lambda: len(sock.sent) >= 8)
    offsets = [f["position"]["offset"] for f in sock.sent if f["type"] == "event"]
    wanted = [i for i in range(4, 12) if i % 3]
    assert offsets == wanted, offsets
    recovered = next(f for f in sock.sent if f["type"] == "recovered")
    assert recovered["count"] == len([i for i in range(4, 10) if i % 3])
    assert types(sock)[:2] == ["subscribed", "event"] and reader.closed
    assert types(sock).index("recovered") == 1 + recovered["count"]


async def test_resume_older_than_retention_is_explicit(hub) -> None:  # noqa: ANN001
    tp = (PREFIX + "job-metrics", 5)
    log = metrics_log(tp, 9)
    hub.reader_factory = lambda: FakeReader({tp: log}, begin=4)
    conn, sock = connect(hub, user="op", operator=True)
    await hub.subscribe(conn, "job:J6:metrics", [{"topic": tp[0], "partition": 5, "offset": 1}])
    await settle(lambda: "recovered" in types(sock))
    assert types(sock)[:2] == ["subscribed", "not_recovered"]
    lost = sock.sent[1]
    assert lost["channel"] == "job:J6:metrics"
    assert lost["earliest"] == [{"topic": tp[0], "partition": 5, "offset": 4, "timestamp": log[4].timestamp}]
    assert [f["position"]["offset"] for f in sock.sent if f["type"] == "event"] == [4, 5, 7, 8]


async def test_failed_recovery_is_never_a_silent_gap(hub) -> None:  # noqa: ANN001
    hub.reader_factory = lambda: FakeReader({}, fail=True)
    conn, sock = connect(hub, user="op", operator=True)
    await hub.subscribe(conn, "jobs:all", [{"topic": PREFIX + "job-lifecycle", "partition": 0, "offset": 1}])
    hub.handle_record(record("job-lifecycle", lifecycle("J7", "alice")[0], offset=2))
    await settle(lambda: len(sock.sent) == 4)
    assert types(sock) == ["subscribed", "not_recovered", "recovered", "event"]
    assert "kafka unreachable" in sock.sent[1]["reason"]


def test_origin_check() -> None:
    from app.web.ws import origin_allowed

    settings = Settings(ws_allowed_origins="https://dash.example, http://localhost:3000/")
    host = "127.0.0.1:6066"
    assert origin_allowed(origin="http://127.0.0.1:6066", host=host, settings=settings)  # the server's own
    assert origin_allowed(origin="https://dash.example", host=host, settings=settings)
    assert origin_allowed(origin="http://localhost:3000", host=host, settings=settings)
    for bad in ("http://evil.example", "http://127.0.0.1:6067", "null", "file://127.0.0.1:6066",
                "https://dash.example.evil"):
        assert not origin_allowed(origin=bad, host=host, settings=settings), bad


async def test_http_owner_lookup_forwards_the_token_and_waits_out_503() -> None:
    from aiohttp import web

    from app.worker.websocket_hub import http_owner_lookup

    calls: list[tuple[str, str]] = []

    async def job(request: web.Request) -> web.Response:
        calls.append((request.match_info["job_id"], request.headers.get("Authorization", "")))
        if len(calls) == 1:
            return web.json_response({"error": "not ready"}, status=503)
        if request.match_info["job_id"] == "j/1" and request.headers.get("Authorization") == "Bearer alice-token":
            return web.json_response({"job_id": "j/1", "user_id": "alice", "status": "RUNNING"})
        return web.json_response({"error": "job not found"}, status=404)

    server = web.Application()
    server.router.add_get("/api/jobs/{job_id}", job)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    lookup = http_owner_lookup(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        assert await lookup("j/1", "alice-token") == "alice"
        assert await lookup("j/1", "bob-token") is None
        assert await lookup("nope", "alice-token") is None
    finally:
        await lookup.close()
        await runner.cleanup()
    assert calls[0] == calls[1] == ("j/1", "Bearer alice-token")  # 503, then asked again
    assert calls[2] == ("j/1", "Bearer bob-token")
