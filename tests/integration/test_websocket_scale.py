"""2,000 concurrent websocket clients on one real worker: each receives its own channel's
events and the shared alerts, none receives another user's, and an unauthorised subscription
is refused while they are all connected. (Correctness only; fan-out latency is in bench/.)"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from support.ws import WS_ENV, Client, notification, system_alert, token

from app.core.settings import Settings
from app.worker.publisher import EventPublisher

CLIENTS = 2000
WAVE = 250


async def _open(session: aiohttp.ClientSession, base: str, env: dict[str, str], user: str) -> Client:
    client = await Client.connect(session, base, bearer=token(env, user))
    for channel in (f"user:{user}:notifications", "system:alerts"):
        await client.ws.send_str(json.dumps({"type": "subscribe", "channel": channel}))
    await client.wait_for(lambda _f: sum(f["type"] == "subscribed" for f in client.frames) == 2, timeout=120,
                          what="2 subscribed frames")
    return client


async def test_two_thousand_clients_receive_their_channels(worker_factory, worker_env, uid) -> None:  # noqa: ANN001
    env = {**worker_env, **WS_ENV}
    worker = worker_factory(**WS_ENV).start()
    settings = Settings.from_env(environ=env)
    users = [f"u{n:04d}-{uid}" for n in range(CLIENTS)]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, EventPublisher(settings=settings) as publisher:
        clients: list[Client] = []
        for start in range(0, CLIENTS, WAVE):
            wave = users[start:start + WAVE]
            clients += await asyncio.gather(*(_open(session, worker.base_url, env, u) for u in wave))
        assert len(clients) == CLIENTS and all(not c.closed.is_set() for c in clients)

        # an unauthorised subscription is refused (naming the channel) while all are connected
        refused = await clients[0].subscribe(f"user:{users[1]}:notifications")
        assert refused == {"type": "error", "code": "forbidden", "channel": f"user:{users[1]}:notifications",
                           "message": refused["message"]}
        assert (await clients[0].subscribe("jobs:all"))["code"] == "forbidden"

        notes = {u: notification(u, title=f"for {u}") for u in users}
        alert = system_alert(f"alert {uid}")
        await publisher.publish_many([*notes.values(), alert])

        deadline = time.monotonic() + 120

        async def received(client: Client, user: str) -> None:
            channel = f"user:{user}:notifications"
            await client.wait_for(lambda f: f["type"] == "event" and f["event"].get("event_id") == notes[user].event_id,
                                  timeout=max(1.0, deadline - time.monotonic()), what=f"{user}'s notification")
            await client.wait_for(lambda f: f["type"] == "event" and f["event"].get("event_id") == alert.event_id,
                                  timeout=max(1.0, deadline - time.monotonic()), what="the alert")
            # nobody gets anybody else's events
            assert {f["channel"] for f in client.frames if f["type"] == "event"} <= {channel, "system:alerts"}
            assert {f["event"]["user_id"] for f in client.events(channel)} == {user}

        await asyncio.gather(*(received(c, u) for c, u in zip(clients, users)))
        assert all(not c.closed.is_set() for c in clients)
        await asyncio.gather(*(c.close() for c in clients))
