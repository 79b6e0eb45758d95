"""The websocket feed against a real worker: channels and who may subscribe, bad input of
every kind (each refused with a clear frame, close code or HTTP status while everyone else
keeps being served), a slow client closed with 4008, and recovery from Kafka after a
disconnect (all 500 missed events in order, then live, no duplicate; retention → not_recovered)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import secrets
import socket
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import pytest
import websockets
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from support.ws import (
    WS_ENV,
    Client,
    alive,
    metric_sample,
    notification,
    system_alert,
    token,
    ws_url,
)

from app.core.settings import PROJECT_ROOT, Settings
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async


async def _expect_http_refusal(session: aiohttp.ClientSession, url: str, status: int, **kwargs) -> None:  # noqa: ANN003
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(url, **kwargs)
    assert info.value.status == status, info.value


async def _expect_close(session: aiohttp.ClientSession, base_url: str, code: int, *, send=None,  # noqa: ANN001
                        error_code: str | None = None, **kwargs) -> Client:  # noqa: ANN003
    client = await Client.connect(session, base_url, **kwargs)
    if send is not None:
        await send(client.ws)
    try:
        await asyncio.wait_for(client.closed.wait(), 60)
    except asyncio.TimeoutError:
        pytest.fail(f"not closed with {code} within 60 s; frames: {client.frames[-3:]}")
    assert client.ws.close_code == code, (client.ws.close_code, client.frames)
    if error_code is not None:
        assert client.frames and client.frames[-1]["type"] == "error" and client.frames[-1]["code"] == error_code
    return client


async def test_channels_authorization_bad_input_and_slow_clients(  # noqa: ANN001
        worker_factory, worker_env, uid) -> None:
    env = {**worker_env, **WS_ENV, "COSMIC_WS_SEND_QUEUE": "64"}
    worker = worker_factory(**WS_ENV, COSMIC_WS_SEND_QUEUE="64").start()
    settings = Settings.from_env(environ=env)
    base = worker.base_url
    job, bobs_job = f"J-{uid}", f"K-{uid}"
    rng = random.Random(5)
    alice_events = lifecycle_events(job_id=job, user_id="alice", rng=rng, outcome="COMPLETED")
    bob_events = lifecycle_events(job_id=bobs_job, user_id="bob", rng=rng, outcome="FAILED")

    async with aiohttp.ClientSession() as session, EventPublisher(settings=settings) as publisher:
        operator = await Client.connect(session, base, bearer=token(env, "ops", role="operator"))
        assert (await operator.welcome())["operator"] is True
        for channel in ("jobs:all", "system:alerts", "user:slowpoke:notifications"):
            assert (await operator.subscribe(channel))["type"] == "subscribed"
        alice = await Client.connect(session, base, auth_frame=token(env, "alice"))  # first-frame auth
        assert await alice.welcome() == {"type": "welcome", "user_id": "alice", "operator": False}

        await publisher.publish_many([alice_events[0], bob_events[0]])
        await operator.wait_events("jobs:all", 2)
        await alice.subscribe_when_known(f"job:{job}:status")
        for channel in (f"job:{bobs_job}:status", f"job:{bobs_job}:metrics", "jobs:all", "user:bob:notifications"):
            refused = await alice.subscribe(channel)
            assert refused["type"] == "error" and refused["code"] == "forbidden" and refused["channel"] == channel
        for channel in ("user:alice:notifications", "system:alerts"):
            assert (await alice.subscribe(channel))["type"] == "subscribed"

        await publisher.publish_many([*alice_events[1:], *bob_events[1:], notification("bob"), system_alert()])
        status = await alice.wait_events(f"job:{job}:status", len(alice_events) - 1)
        assert [f["event"]["event_id"] for f in status] == [e.event_id for e in alice_events[1:]]
        assert all(f["position"]["topic"] == f"{uid}-job-lifecycle" for f in status)
        assert [f["position"]["offset"] for f in status] == sorted(f["position"]["offset"] for f in status)
        mine = notification("alice")
        await publisher.publish(mine)
        await alice.wait_for(lambda f: f["type"] == "event" and f["event"].get("event_id") == mine.event_id)
        await alice.wait_events("system:alerts", 1)
        await operator.wait_events("jobs:all", len(alice_events) + len(bob_events))
        await operator.wait_events("system:alerts", 1)
        await alive(alice)
        assert not any(f["channel"].startswith(f"job:{bobs_job}") for f in alice.frames if f["type"] == "event")
        # hers only (the pipeline also notifies her of her job's completion); never bob's
        assert {f["event"]["user_id"] for f in alice.events("user:alice:notifications")} == {"alice"}

        # -- bad input: each refused clearly; alice and the operator keep being served ------------
        for text, code in (("{nope", "bad_frame"), ('{"type": "subscribe"}', "bad_frame"),
                           ('{"type": "teleport"}', "bad_frame"), ('{"type": "subscribe", "channel": "weather:x"}',
                                                                  "unknown_channel")):
            seen = len(alice.frames)
            await alice.ws.send_str(text)
            error = await alice.wait_for(lambda f, s=seen: f["type"] == "error" and alice.frames.index(f) >= s)
            assert error["code"] == code, error
        assert (await alice.wait_for(lambda f: f.get("code") == "unknown_channel"))["channel"] == "weather:x"
        await alice.ws.send_bytes(b"\x00\x01")
        await alice.wait_for(lambda f: f.get("code") == "bad_frame" and "binary" in f["message"])

        # oversized frame → 1009
        await _expect_close(session, base, 1009, bearer=token(env, "carol"),
                            send=lambda ws: ws.send_str('{"type": "ping", "id": "' + "x" * 5000 + '"}'))
        # expired, forged, wrong audience, missing claims: as the first frame → error + 4001
        for bad in (token(env, "carol", exp=int(time.time()) - 60), token(env, "carol", key="not-the-secret-" * 3),
                    token(env, "carol", aud="someone-else"), "not.a.jwt"):
            await _expect_close(session, base, 4001, auth_frame=bad, error_code="not_authenticated")
        # ... and in the header → 401 before the upgrade
        await _expect_http_refusal(session, ws_url(base), 401,
                                   headers={"Authorization": f"Bearer {token(env, 'carol', key='forged-secret-' * 3)}"})
        await _expect_http_refusal(session, ws_url(base), 401,
                                   headers={"Authorization": f"Bearer {token(env, 'carol', aud='other')}"})
        # query-string tokens are refused even when valid
        for name in ("token", "access_token", "jwt"):
            await _expect_http_refusal(session, f"{ws_url(base)}?{name}={token(env, 'carol')}", 401)
        # cross-origin upgrades → 403; the configured origin and the server's own are fine
        await _expect_http_refusal(session, ws_url(base), 403, headers={"Origin": "http://evil.example"})
        for origin in ("http://dashboard.example", base):
            ok = await Client.connect(session, base, bearer=token(env, "carol"), headers={"Origin": origin})
            await ok.welcome()
            await ok.close()
        # no auth frame in time, or another frame first → 4001
        await _expect_close(session, base, 4001, error_code="not_authenticated")
        await _expect_close(session, base, 4001, error_code="not_authenticated",
                            send=lambda ws: ws.send_str('{"type": "subscribe", "channel": "system:alerts"}'))

        # -- a client that stops reading is closed with 4008; the others get every event --------
        # a tiny receive buffer (set before connecting, so the kernel never grows it)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, (urlsplit(base).hostname, urlsplit(base).port))
        slow = await websockets.connect(ws_url(base), sock=raw, max_queue=1, max_size=None, ping_interval=None,
                                        additional_headers={"Authorization": f"Bearer {token(env, 'slowpoke')}"})
        await slow.send('{"type": "subscribe", "channel": "user:slowpoke:notifications"}')
        assert '"welcome"' in await asyncio.wait_for(slow.recv(), 30)
        assert '"subscribed"' in await asyncio.wait_for(slow.recv(), 30)
        # from here on `slow` reads nothing: its socket buffers, then its queue (64 frames), fill up
        big = secrets.token_hex(30_000)  # 60 kB that no compression could shrink much
        count = 300
        for start in range(0, count, 20):
            await publisher.publish_many([notification("slowpoke", body=big, title=str(n))
                                          for n in range(start, start + 20)])
        got = await operator.wait_events("user:slowpoke:notifications", count, timeout=120)
        assert [f["event"]["title"] for f in got] == [str(n) for n in range(count)]
        received = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                try:
                    await asyncio.wait_for(slow.recv(), 60)
                except asyncio.TimeoutError:
                    pytest.fail(f"the slow client read {received} frames and was never closed")
                received += 1
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008, closed.value
        assert received < count

        # -- after all that, everyone else is still served ------------------------------------
        await publisher.publish_many([system_alert("after the bad input")])
        for client in (alice, operator):
            await client.wait_for(lambda f: f["type"] == "event" and f["event"].get("message") == "after the bad input")
            await alive(client)
        await alice.close()
        await operator.close()


async def test_reconnect_recovers_missed_events_in_order(worker_factory, worker_env, uid) -> None:  # noqa: ANN001
    env = {**worker_env, **WS_ENV}
    worker = worker_factory(**WS_ENV).start()
    settings = Settings.from_env(environ=env)
    base, job = worker.base_url, f"M-{uid}"
    channel = f"job:{job}:metrics"
    alice_token = token(env, "alice")

    async with aiohttp.ClientSession() as session, EventPublisher(settings=settings) as publisher:
        await publisher.publish(lifecycle_events(job_id=job, user_id="alice", rng=random.Random(2))[0])
        first = await Client.connect(session, base, bearer=alice_token)
        await first.subscribe_when_known(channel)
        await publisher.publish(metric_sample(job, 0))
        last = (await first.wait_events(channel, 1))[-1]["position"]
        await first.close()

        # disconnected for ~5 s while 500 events flow
        missed = [metric_sample(job, n) for n in range(1, 501)]
        started = time.monotonic()
        for start in range(0, len(missed), 10):
            await publisher.publish_many(missed[start:start + 10])
            await asyncio.sleep(max(0.0, started + (start + 10) / 100 - time.monotonic()))

        again = await Client.connect(session, base, bearer=alice_token)
        assert (await again.subscribe(channel, resume=[last]))["type"] == "subscribed"
        recovered = await again.wait_for(lambda f: f["type"] == "recovered", what="recovered")
        assert recovered == {"type": "recovered", "channel": channel, "count": 500}
        live = [metric_sample(job, n) for n in range(501, 506)]
        await publisher.publish_many(live)
        frames = await again.wait_events(channel, 505)
        await asyncio.sleep(1)  # would show a duplicate arriving late
        frames = again.events(channel)
        assert [f["event"]["event_id"] for f in frames] == [e.event_id for e in missed + live]
        offsets = [f["position"]["offset"] for f in frames]
        assert offsets == list(range(last["offset"] + 1, last["offset"] + 506))  # one partition, no gap
        order = [f["type"] for f in again.frames if f["type"] in ("event", "recovered")]
        assert order.index("recovered") == 500  # missed events, then `recovered`, then live

        # retention passed: records before the resume position are gone → explicit not_recovered
        cut = last["offset"] + 101
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(last["topic"], last["partition"]): RecordsToDelete(cut)})
        finally:
            await admin.close()
        late = await Client.connect(session, base, bearer=alice_token)
        assert (await late.subscribe(channel, resume=[last]))["type"] == "subscribed"
        gap = await late.wait_for(lambda f: f["type"] == "not_recovered", what="not_recovered")
        assert gap["channel"] == channel
        assert [(e["topic"], e["partition"], e["offset"]) for e in gap["earliest"]] == [
            (last["topic"], last["partition"], cut)]
        done = await late.wait_for(lambda f: f["type"] == "recovered")
        assert done["count"] == 505 - 100
        assert late.events(channel)[0]["position"]["offset"] == cut
        for client in (again, late):
            await client.close()

        # `cosmic watch` prints the channel's events as JSON lines
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.ops.cli", "watch", channel, "--url", ws_url(base), "--count", "2",
            env={**env, "COSMIC_TOKEN": alice_token}, cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        sent = itertools.count(1000)

        async def watcher_done() -> bool:
            await publisher.publish(metric_sample(job, next(sent)))  # until the watcher has subscribed and printed 2
            try:
                await asyncio.wait_for(watch.wait(), 1)
            except asyncio.TimeoutError:
                pass
            return watch.returncode is not None

        try:
            await wait_until_async(watcher_done, timeout=90, interval=0, what="cosmic watch to print 2 events",
                                   fail=False)
        finally:
            if watch.returncode is None:
                watch.kill()
        out, err = await watch.communicate()
        assert watch.returncode == 0, err.decode()
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert len(lines) == 2 and all(line["channel"] == channel and line["event"]["job_id"] == job for line in lines)
        assert lines[0]["position"]["offset"] < lines[1]["position"]["offset"]
