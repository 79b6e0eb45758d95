"""Helpers of the websocket integration tests: clients, tokens and events to publish."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable

import aiohttp
import jwt

from app.auth import mint_token
from app.models import JobMetricsSample, NotificationSent, SystemAlert, utc_now
from app.settings import Settings

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
    """One websocket connection whose frames are collected in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, base_url: str, *, bearer: str | None = None,
                      auth_frame: str | None = None, headers: dict[str, str] | None = None) -> "Client":
        all_headers = dict(headers or {})
        if bearer:
            all_headers["Authorization"] = f"Bearer {bearer}"
        ws = await session.ws_connect(ws_url(base_url), headers=all_headers, max_msg_size=0, autoping=True,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=10))
        client = cls(ws)
        if auth_frame is not None:
            await client.send({"type": "auth", "token": auth_frame})
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(json.loads(msg.data))
        finally:
            self.closed.set()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = DEADLINE,
                       what: str = "a frame") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            if time.monotonic() > deadline or (self.closed.is_set() and not any(map(predicate, self.frames))):
                raise AssertionError(f"no {what} within {timeout:.0f} s (close code {self.ws.close_code}); "
                                     f"last frames: {self.frames[-5:]}")
            await asyncio.sleep(0.05)

    async def welcome(self) -> dict[str, Any]:
        return await self.wait_for(lambda f: f["type"] == "welcome", what="welcome")

    async def subscribe(self, channel: str, *, resume: list[dict[str, Any]] | None = None,
                        timeout: float = DEADLINE) -> dict[str, Any]:
        """Subscribe and return the answer (``subscribed`` or an ``error`` naming the channel)."""
        seen = len(self.frames)
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if resume is not None:
            frame["resume"] = resume
        await self.send(frame)

        def answer(f: dict[str, Any]) -> bool:
            return f.get("channel") == channel and f["type"] in ("subscribed", "error")

        deadline = time.monotonic() + timeout
        while True:
            for f in self.frames[seen:]:
                if answer(f):
                    return f
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError(f"no answer to subscribe {channel}: {self.frames[-5:]}")
            await asyncio.sleep(0.05)

    async def subscribe_when_known(self, channel: str, *, timeout: float = DEADLINE) -> None:
        """Subscribe to a job channel, retrying while the worker does not know the job yet."""
        deadline = time.monotonic() + timeout
        while True:
            answer = await self.subscribe(channel)
            if answer["type"] == "subscribed":
                return
            assert answer["code"] == "forbidden", answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{channel} still refused: {answer}")
            await asyncio.sleep(1)

    def events(self, channel: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "event" and f["channel"] == channel]

    async def wait_events(self, channel: str, count: int, *, timeout: float = DEADLINE) -> list[dict[str, Any]]:
        await self.wait_for(lambda _f: len(self.events(channel)) >= count, timeout=timeout,
                            what=f"{count} events of {channel} (have {len(self.events(channel))})")
        return self.events(channel)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def alive(client: Client) -> None:
    """The connection still answers (ping → pong)."""
    ping_id = uuid.uuid4().hex
    await client.send({"type": "ping", "id": ping_id})
    await client.wait_for(lambda f: f["type"] == "pong" and f.get("id") == ping_id, what="pong")


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
