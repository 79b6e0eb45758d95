"""Websocket helpers of the integration and reliability tests: the client, tokens and events to publish."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable

import aiohttp
import jwt

from app.core.auth import mint_token
from app.core.models import JobMetricsSample, NotificationSent, SystemAlert
from app.core.settings import Settings
from app.core.timeutil import utc_now
from support.polling import wait_until_async

#: Worker settings of the websocket tests: no RabbitMQ copies (not under test; less load),
#: short auth timeout, small frame limit, one allowed foreign origin.
WS_ENV = {
    "COSMIC_RABBITMQ_BRIDGE_ENABLED": "false",
    "COSMIC_WS_AUTH_TIMEOUT_SECONDS": "3",
    "COSMIC_WS_MAX_FRAME_BYTES": "4096",
    "COSMIC_WS_ALLOWED_ORIGINS": "http://dashboard.example",
}
DEADLINE = 90.0


def token(env: dict[str, str], sub: str, *, role: str | None = None, **overrides: Any) -> str:
    """A token for the worker of ``env``; ``overrides`` replace claims (exp, aud) or the key."""
    settings = Settings.from_env(environ=env)
    if not overrides:
        return mint_token(settings=settings, sub=sub, role=role)
    claims: dict[str, Any] = {"sub": sub, "aud": settings.jwt_audience, "exp": int(time.time()) + 3600}
    if role:
        claims["role"] = role
    key = overrides.pop("key", settings.jwt_secret)
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="HS256")


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/ws"


class Client:
    """One websocket connection whose frames are collected in the background (``frames``: the
    decoded text frames, ``raw``: the type of every message received)."""

    #: Default of every wait (the reliability suite's clients use 60 s: ``access_support.WsClient``).
    timeout: float = DEADLINE

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.raw: list[Any] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, *, bearer: str | None = None,
                      auth_frame: str | None = None, headers: dict[str, str] | None = None) -> "Client":
        """Connect to ``url``: the worker's ``/ws`` URL, or its base ``http://`` URL."""
        all_headers = dict(headers or {})
        if bearer:
            all_headers["Authorization"] = f"Bearer {bearer}"
        if not url.startswith(("ws://", "wss://")):
            url = ws_url(url)
        ws = await session.ws_connect(url, headers=all_headers, max_msg_size=0, autoping=True,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=10))
        client = cls(ws)
        if auth_frame is not None:
            await client.send({"type": "auth", "token": auth_frame})
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                self.raw.append(msg.type)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(json.loads(msg.data))
        finally:
            self.closed.set()

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    def _last_frames(self) -> str:
        return f"close code {self.ws.close_code}; last frames: {self.frames[-5:]}"

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, start: int = 0,
                       timeout: float | None = None, what: str = "a frame") -> dict[str, Any]:
        """The first frame from index ``start`` on that ``predicate`` accepts; fails at once when
        the connection closed without one."""
        timeout = self.timeout if timeout is None else timeout

        def found() -> dict[str, Any] | None:
            closed = self.closed.is_set()  # every frame is in ``frames`` once this is set
            frame = next((f for f in self.frames[start:] if predicate(f)), None)
            if frame is None and closed:
                raise AssertionError(f"no {what}: the connection closed ({self._last_frames()})")
            return frame

        return await wait_until_async(found, timeout=timeout, interval=0.05, what=what,
                                      describe=lambda _last: self._last_frames())

    async def welcome(self) -> dict[str, Any]:
        return await self.wait_for(lambda f: f.get("type") == "welcome", what="welcome")

    async def subscribe(self, channel: str, *, resume: list[dict[str, Any]] | None = None,
                        timeout: float | None = None) -> dict[str, Any]:
        """Subscribe and return the answer (``subscribed`` or an ``error`` naming the channel)."""
        seen = len(self.frames)
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if resume is not None:
            frame["resume"] = resume
        await self.send(frame)
        return await self.wait_for(lambda f: f.get("channel") == channel and f.get("type") in ("subscribed", "error"),
                                   start=seen, timeout=timeout, what=f"an answer to subscribe {channel}")

    async def subscribe_when_known(self, channel: str, *, timeout: float | None = None) -> None:
        """Subscribe to a job channel, retrying while the worker does not know the job yet."""

        async def answer() -> dict[str, Any]:
            got = await self.subscribe(channel)
            assert got["type"] == "subscribed" or got["code"] == "forbidden", got
            return got

        await wait_until_async(answer, timeout=self.timeout if timeout is None else timeout, interval=1.0,
                               what=f"{channel} accepted", accept=lambda got: got["type"] == "subscribed")

    async def ping(self) -> list[dict[str, Any]]:
        """Ping and wait for the pong; the frames received in between (pong excluded)."""
        seen = len(self.frames)
        ping_id = uuid.uuid4().hex
        await self.send({"type": "ping", "id": ping_id})
        pong = await self.wait_for(lambda f: f.get("type") == "pong" and f.get("id") == ping_id, start=seen,
                                   what="pong")
        return [f for f in self.frames[seen:] if f is not pong]

    async def closed_with(self, *, timeout: float | None = None) -> int | None:
        """Wait until the server closed the connection; its close code."""
        await asyncio.wait_for(self.closed.wait(), self.timeout if timeout is None else timeout)
        return self.ws.close_code

    def events(self, channel: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "event" and f["channel"] == channel]

    async def wait_events(self, channel: str, count: int, *, timeout: float | None = None) -> list[dict[str, Any]]:
        await self.wait_for(lambda _f: len(self.events(channel)) >= count, timeout=timeout,
                            what=f"{count} events of {channel} (have {len(self.events(channel))})")
        return self.events(channel)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def alive(client: Client) -> None:
    """The connection still answers (ping → pong)."""
    await client.ping()


def metric_sample(job_id: str, n: int, *, user_id: str | None = None) -> JobMetricsSample:
    return JobMetricsSample(event_id=str(uuid.uuid4()), event_type="JobMetricsSample", timestamp=utc_now(),
                            correlation_id=str(uuid.uuid4()), user_id=user_id, schema_version=1, job_id=job_id,
                            node="c001-001", cpu_pct=float(n % 100), gpu_pct=0.0, memory_gb=1.0, io_mb_s=0.0,
                            execution_time_s=float(n))


def notification(user_id: str, *, body: str = "done", title: str = "job finished") -> NotificationSent:
    return NotificationSent(event_id=str(uuid.uuid4()), event_type="NotificationSent", timestamp=utc_now(),
                            correlation_id=str(uuid.uuid4()), user_id=user_id, schema_version=1,
                            notification_id=str(uuid.uuid4()), channel="WEBSOCKET", severity="INFO", title=title,
                            body=body, job_id=None)


def system_alert(message: str = "consumer lag above threshold") -> SystemAlert:
    return SystemAlert(event_id=str(uuid.uuid4()), event_type="SystemAlert", timestamp=utc_now(),
                       correlation_id=str(uuid.uuid4()), user_id=None, schema_version=1,
                       alert_id=str(uuid.uuid4()), component="worker-test", rule="consumer-lag", severity="WARNING",
                       state="FIRING", message=message, metrics={"lag": 12345.0})
