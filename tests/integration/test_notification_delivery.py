"""Webhook delivery through RabbitMQ against the real stack: one user's dead endpoint delays
only that user's notifications; every delivery is signed; internal addresses stay closed.

Receivers run in this process: 48 good users and one that always answers 500 on 127.0.0.2
(the one network the worker is allowed to reach, ``COSMIC_WEBHOOK_ALLOWED_NETWORKS``), and a
black hole (accepts TCP, never answers) there too. A listener on 127.0.0.1 and [::1] stands
for the internal services an attacker would aim at: it must never be connected to.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import defaultdict

import aio_pika
import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer

from app.core.auth import mint_token
from app.core.models import NotificationSent
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.core.webhook_signing import SIGNATURE_HEADER, verify
from app.worker.publisher import EventPublisher
from app.worker.rabbit_consumer import retry_delay
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture

USERS = 50
PER_USER = 10
RATE = 100.0  # notifications per second
TIMEOUT_S = 2.0  # the worker's webhook timeout: what one black-hole attempt holds a slot for
RECEIVER_HOST = "127.0.0.2"
#: A shorter retry schedule than the default 1 … 30 s (walked in real time): 1, 2, 4, 4 s.
RETRY_ENV = {"COSMIC_RABBITMQ_RETRY_DELAYS": "1,2,4", "COSMIC_RABBITMQ_MAX_ATTEMPTS": "5"}


class Receivers:
    """``/hook/<user>`` answers 200, ``/fail/<user>`` 500; every request is kept."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict]] = defaultdict(list)  # notification id -> requests

    async def ok(self, request: web.Request) -> web.Response:
        await self._keep(request)
        return web.Response(status=200)

    async def fail(self, request: web.Request) -> web.Response:
        await self._keep(request)
        return web.Response(status=500, text="receiver broken")

    async def _keep(self, request: web.Request) -> None:
        raw = await request.read()
        self.got[request.headers["Idempotency-Key"]].append(
            {"at": time.monotonic(), "raw": raw, "headers": dict(request.headers), "user": request.match_info["user"]})


class Listener:
    """Counts every TCP connection made to it (and never answers)."""

    def __init__(self) -> None:
        self.connections = 0
        self.servers: list[asyncio.AbstractServer] = []
        self.port = 0

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.read()  # hold it open until the peer gives up
        finally:
            writer.close()

    async def start(self, *hosts: str) -> "Listener":
        for host in hosts:
            try:
                server = await asyncio.start_server(self._on_connect, host, self.port)
            except OSError:
                assert host == "::1", f"cannot listen on {host}"
                continue  # no IPv6 loopback on this machine: [::1] is refused before connecting anyway
            self.port = self.port or server.sockets[0].getsockname()[1]
            self.servers.append(server)
        return self

    async def stop(self) -> None:
        for server in self.servers:
            server.close()


def _loopback_name() -> str:
    """A host name other than ``localhost`` that resolves to loopback here (e.g. the machine's
    own name in /etc/hosts), so the refusal must come from resolving it."""
    for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost"):
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            continue
        if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
            return name
    raise AssertionError("no host name here resolves to loopback; cannot test the resolving refusal")


def _sent(user: str, i: int) -> NotificationSent:
    nid = str(uuid.uuid4())
    return NotificationSent(
        event_id=nid, event_type="NotificationSent", timestamp=utc_now(), correlation_id=nid, user_id=user,
        schema_version=1, notification_id=nid, channel="WEBHOOK", severity="WARNING",
        title=f"notification {i}", body=f"body {i}", job_id=None,
    )


async def test_dead_endpoints_delay_only_their_own_and_internal_addresses_stay_closed(  # noqa: PLR0915
        worker_factory, worker_env, vhost, uid):  # noqa: F811
    receivers, listener = Receivers(), await Listener().start("127.0.0.1", "::1")
    app = web.Application()
    app.router.add_post("/hook/{user}", receivers.ok)
    app.router.add_post("/fail/{user}", receivers.fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, RECEIVER_HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    black_hole = await Listener().start(RECEIVER_HOST)
    env = {"COSMIC_RABBITMQ_URL": vhost.url, "COSMIC_WEBHOOK_ALLOWED_NETWORKS": f"{RECEIVER_HOST}/32",
           "COSMIC_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_S), **RETRY_ENV}
    worker = worker_factory(**env)
    settings = Settings.from_env(environ={**worker_env, **env})
    try:
        await asyncio.to_thread(worker.start)
        await asyncio.to_thread(vhost.wait_for_queues, {"notification-delivery", "job-dlq"})
        async with aiohttp.ClientSession(base_url=worker.base_url) as http:
            await _internal_addresses_are_refused(http=http, settings=settings, uid=uid, port=listener.port)
            users = [f"u{i}-{uid}" for i in range(USERS)]
            slow, broken = users[0], users[1]
            urls = {u: f"http://{RECEIVER_HOST}:{port}/hook/{u}" for u in users}
            urls[slow] = f"http://{RECEIVER_HOST}:{black_hole.port}/hook/{slow}"
            urls[broken] = f"http://{RECEIVER_HOST}:{port}/fail/{broken}"
            secrets = {}
            for user in users:
                async with http.put(f"/api/users/{user}/notification-preferences", json={
                        "channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": urls[user]},
                        headers=_bearer(settings, user)) as response:
                    assert response.status == 202, await response.text()
                    secrets[user] = (await response.json())["webhook_secret"]
            await wait_until_async(lambda: _all_applied(http, settings, users), timeout=60,
                              what="50 users' preferences", interval=0.5, diagnostics=worker.log_tail)

            # 500 notifications at 100/s, one per user per round.
            sent_at: dict[str, float] = {}
            owner: dict[str, str] = {}
            async with EventPublisher(settings=settings) as publisher:
                for i in range(PER_USER):
                    started = time.monotonic()
                    batch = [_sent(user, i) for user in users]
                    for event in batch:
                        sent_at[event.notification_id], owner[event.notification_id] = started, event.user_id
                    await publisher.publish_many(batch)
                    await asyncio.sleep(max(0.0, USERS / RATE - (time.monotonic() - started)))
            good = {nid for nid, user in owner.items() if user not in (slow, broken)}

            async def good_arrived():  # noqa: ANN202
                return good <= set(receivers.got)

            await wait_until_async(good_arrived, timeout=60, what="the 480 good users' notifications", interval=0.5, diagnostics=worker.log_tail)
            latencies = sorted(receivers.got[nid][0]["at"] - sent_at[nid] for nid in good)
            within = sum(1 for s in latencies if s <= 2.0)
            print(f"\n480 notifications of 48 good users: p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
                  f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
                  f"{within} of 480 within 2 s")
            # No good delivery waited behind a black-hole attempt (each holds its slot TIMEOUT_S).
            assert latencies[-2] < TIMEOUT_S, latencies[-10:]
            for nid in good:
                first = receivers.got[nid][0]
                user = owner[nid]
                assert first["user"] == user and first["headers"]["Idempotency-Key"] == nid
                assert verify(secret=secrets[user], body=first["raw"], header=first["headers"][SIGNATURE_HEADER])
                assert json.loads(first["raw"])["notification_id"] == nid

            await _rotation_changes_the_signature(http=http, settings=settings, user=users[2], old=secrets[users[2]],
                                                  receivers=receivers, worker=worker)

            # The broken and the black-hole users walk the retry schedule and end dead-lettered;
            # meanwhile the worker reports the retry queues' depth.
            depths: list[float] = []

            async def sample_depths() -> None:
                while True:
                    depths.append(sum([await asyncio.to_thread(
                        worker.metric, "cosmic_notification_queue_depth", queue=f"notification-delivery.retry.{d}s")
                        for d in settings.retry_delays]))
                    await asyncio.sleep(2)

            sampler = asyncio.create_task(sample_depths())
            theirs = {u: [nid for nid, o in owner.items() if o == u] for u in (slow, broken)}
            schedule = [retry_delay(n, delays=settings.retry_delays) for n in range(1, settings.rabbitmq_max_attempts)]
            walk_s = sum(schedule) + settings.rabbitmq_max_attempts * TIMEOUT_S + 60
            for user, expected_reason in ((broken, "retries-exhausted (http-500)"),
                                          (slow, "retries-exhausted (timeout)")):
                statuses = await wait_until_async(lambda u=user: _final_statuses(http, settings, u, theirs[u]),
                                             timeout=walk_s, what=f"{user}'s dead letters", interval=0.5, diagnostics=worker.log_tail)
                for nid, delivery in statuses.items():
                    assert delivery["status"] == "failed" and delivery["reason"] == expected_reason, delivery
                    assert delivery["attempts"] == settings.rabbitmq_max_attempts, delivery
            sampler.cancel()
        attempts = [receivers.got[nid] for nid in theirs[broken]]
        assert all(len(a) == settings.rabbitmq_max_attempts for a in attempts), [len(a) for a in attempts]
        for tries in attempts:  # the gaps follow the schedule 1, 2, 4, 4 s
            gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
            assert len(gaps) == len(schedule) and all(gap >= d * 0.9 for gap, d in zip(gaps, schedule)), gaps
        assert black_hole.connections >= 1
        dead = await _dead_letters(vhost.url)
        reasons = defaultdict(int)
        for message in dead:
            reasons[(message.headers.get("x-original-queue"), message.headers.get("x-error-reason"))] += 1
        assert reasons[("notification-delivery", "retries-exhausted")] == 2 * PER_USER, dict(reasons)
        assert reasons[("notification-delivery", "forbidden-address")] == 1, dict(reasons)
        delivered = await asyncio.to_thread(worker.metric, "cosmic_notification_deliveries_total", channel="WEBHOOK",
                                            outcome="delivered")
        assert delivered >= len(good)
        failed = await asyncio.to_thread(worker.metric, "cosmic_notification_deliveries_total", channel="WEBHOOK",
                                         outcome="failed")
        assert failed == 2 * PER_USER + 1
        latency = await asyncio.to_thread(worker.metric, "cosmic_notification_delivery_seconds_count", channel="WEBHOOK")
        assert latency == delivered
        assert max(depths) > 0, "the retry queues' depth was never reported"
        assert listener.connections == 0, "an internal address was connected to"
    finally:
        await listener.stop()
        await black_hole.stop()
        await runner.cleanup()


def _bearer(settings: Settings, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings=settings, sub=sub)}"}


async def _all_applied(http, settings, users) -> bool:  # noqa: ANN001
    for user in users:
        async with http.get(f"/api/users/{user}/notification-preferences", headers=_bearer(settings, user)) as r:
            if r.status != 200 or (await r.json()).get("signing_secret") is not True:
                return False
    return True


async def _final_statuses(http, settings, user, nids) -> dict | None:  # noqa: ANN001
    async with http.get(f"/api/users/{user}/notifications?limit=50", headers=_bearer(settings, user)) as response:
        entries = (await response.json())["notifications"]
    statuses = {e["notification_id"]: e["deliveries"]["WEBHOOK"] for e in entries if e["notification_id"] in nids}
    done = len(statuses) == len(nids) and all(d["status"] == "failed" for d in statuses.values())
    return statuses if done else None


async def _internal_addresses_are_refused(*, http, settings, uid, port) -> None:  # noqa: ANN001
    """PUT refuses each internal target (400 naming webhook_url); a target that got past
    validation anyway (written to Kafka directly) is refused at connect time."""
    attacker = f"mallory-{uid}"
    path = f"/api/users/{attacker}/notification-preferences"
    targets = ["127.0.0.1", "localhost", "[::1]", "10.0.0.1", "169.254.169.254", "[::ffff:127.0.0.1]",
               _loopback_name()]
    for host in targets:
        async with http.put(path, json={"channels": ["WEBHOOK"], "webhook_url": f"http://{host}:{port}/admin"},
                            headers=_bearer(settings, attacker)) as response:
            body = await response.json()
            assert response.status == 400 and body["field"] == "webhook_url", (host, body)
    # Past validation: a preferences record produced straight to Kafka, then a notification.
    sneaky = f"sneaky-{uid}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        value = {"channels": ["WEBHOOK"], "webhook_url": f"http://127.0.0.1:{port}/admin", "email": None,
                 "signing_salt": "0" * 32}
        await producer.send_and_wait(settings.topic_prefix + "notification-preferences", json.dumps(value).encode(),
                                     key=sneaky.encode())
    finally:
        await producer.stop()

    async def applied():  # noqa: ANN202
        async with http.get(f"/api/users/{sneaky}/notification-preferences", headers=_bearer(settings, sneaky)) as r:
            return (await r.json()).get("webhook_url") is not None

    await wait_until_async(applied, timeout=60, what="the sneaky preferences", interval=0.5)
    event = _sent(sneaky, 0)
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish(event)
    statuses = await wait_until_async(lambda: _final_statuses(http, settings, sneaky, {event.notification_id}),
                                 timeout=60, what="the refusal at connect time", interval=0.5)
    assert statuses[event.notification_id]["reason"] == "forbidden-address", statuses


async def _rotation_changes_the_signature(*, http, settings, user, old, receivers, worker) -> None:  # noqa: ANN001
    async with http.post(f"/api/users/{user}/notification-preferences/secret",
                         headers=_bearer(settings, "ops")) as response:
        assert response.status == 403  # another user (not an operator)
    async with http.post(f"/api/users/{user}/notification-preferences/secret",
                         headers=_bearer(settings, user)) as response:
        assert response.status == 202, await response.text()
        new = (await response.json())["webhook_secret"]
    assert new != old and new.startswith("whsec_")
    async with EventPublisher(settings=settings) as publisher:
        for attempt in range(60):  # until the rotation is applied: then the new secret signs
            event = _sent(user, 100 + attempt)
            await publisher.publish(event)

            async def arrived(nid=event.notification_id):  # noqa: ANN202
                return receivers.got.get(nid)

            [request] = await wait_until_async(arrived, timeout=30, what="a delivery after the rotation", interval=0.5, diagnostics=worker.log_tail)
            header = request["headers"][SIGNATURE_HEADER]
            if verify(secret=new, body=request["raw"], header=header):
                assert not verify(secret=old, body=request["raw"], header=header)
                return
            assert verify(secret=old, body=request["raw"], header=header)
            await asyncio.sleep(0.5)
    raise AssertionError("the rotated secret never signed a delivery")


async def _dead_letters(url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue("job-dlq", ensure=True)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()
