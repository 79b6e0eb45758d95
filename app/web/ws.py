"""``GET /ws``: the websocket feed (protocol: ``docs/websocket.md``; fan-out and recovery:
:mod:`app.worker.websocket_hub`).

Before the upgrade: a token in the query string → 401; an ``Origin`` that is neither the
server's own nor in ``COSMIC_WS_ALLOWED_ORIGINS`` → 403; a bad token in the
``Authorization`` header → 401; no running hub within ``HUB_START_WAIT_S`` → 503. After the upgrade, a client without
a header token has ``COSMIC_WS_AUTH_TIMEOUT_SECONDS`` to send ``{"type": "auth", "token"}``;
every authentication failure is an ``error`` frame (``not_authenticated``) then close 4001.
aiohttp pings every ``COSMIC_WS_PING_SECONDS`` (closing peers that do not answer) and closes a
client frame over ``COSMIC_WS_MAX_FRAME_BYTES`` with 1009.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from faust.web import View

from app.core.auth import AuthError, Principal, verify_token
from app.core.settings import Settings
from app.web.route import endpoint, page, public
from app.worker.main import settings
from app.worker.websocket_hub import (
    CLOSE_AUTH,
    Connection,
    WebsocketHub,
    dumps,
    error_frame,
    handle_frame,
)

logger = logging.getLogger(__name__)

QUERY_TOKEN_NAMES = ("token", "access_token", "jwt")
#: Seconds a close handshake may take before the socket is aborted (a slow client that has
#: stopped reading gets this long to read what was queued and see its close code).
CLOSE_GRACE_SECONDS = 60.0


def origin_allowed(*, origin: str, host: str | None, settings: Settings) -> bool:
    """Whether a browser page at ``origin`` may open the feed: the server's own origin
    (same host:port as the request) or one of ``COSMIC_WS_ALLOWED_ORIGINS``."""
    origin = origin.strip().rstrip("/")
    if origin in settings.ws_origins:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == (host or "").lower()


def _refuse(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status)


async def _authenticate_first_frame(ws: web.WebSocketResponse) -> tuple[Principal, str] | None:
    """(principal, token) of the first frame, or None after closing the socket (4001)."""
    try:
        msg = await ws.receive(timeout=settings.ws_auth_timeout_seconds)
    except asyncio.TimeoutError:
        await _close_unauthenticated(ws, f"no authentication within {settings.ws_auth_timeout_seconds:g} s")
        return None
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None  # gone, or closed by aiohttp already (1009 for an oversized frame)
    frame: Any = None
    if msg.type == WSMsgType.TEXT:
        try:
            frame = json.loads(msg.data)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            frame = None
    if not (isinstance(frame, dict) and frame.get("type") == "auth" and isinstance(frame.get("token"), str)):
        await _close_unauthenticated(ws, 'the first frame must be {"type": "auth", "token": "<jwt>"} '
                                         "(or send the Authorization header)")
        return None
    try:
        return verify_token(token=frame["token"], settings=settings), frame["token"]
    except AuthError as exc:
        await _close_unauthenticated(ws, str(exc))
        return None


async def _close_unauthenticated(ws: web.WebSocketResponse, reason: str) -> None:
    try:
        await ws.send_str(error_frame(code="not_authenticated", message=reason))
        await ws.close(code=CLOSE_AUTH, message=reason.encode()[:120])
    except Exception:  # noqa: BLE001 - the peer may be gone already
        pass


#: How long an upgrade waits for the hub of a worker that is still starting before answering 503.
HUB_START_WAIT_S = 5.0


async def _running_hub() -> WebsocketHub | None:
    """The running hub; while the worker starts its services (HTTP is up a moment earlier),
    wait for it up to ``HUB_START_WAIT_S`` rather than turn the client away."""
    deadline = time.monotonic() + HUB_START_WAIT_S
    while WebsocketHub.current is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return WebsocketHub.current


@page("/ws")
@endpoint(access=public(reason="the websocket upgrade: the token comes in the upgrade's Authorization header or "
                               "the first frame (checked by the view itself)"),
          tags=["websocket"], summary="Websocket feed of job events and alerts (protocol: docs/websocket.md)",
          description="JWT in the Authorization header or an auth frame first; tokens in the query string are refused.",
          responses={101: "switching protocols", 400: "not a websocket upgrade request",
                     401: "token in the query string or invalid header token",
                     403: "Origin not allowed", 503: "feed not running yet"})
async def websocket_feed(view: View, request: web.Request) -> web.StreamResponse:
    """Upgrade to the websocket feed (see the module docstring)."""
    if any(name in request.query for name in QUERY_TOKEN_NAMES):
        return _refuse(401, "unauthorized", "tokens are not accepted in the query string; send the "
                                            "Authorization header or an auth frame")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin=origin, host=request.host, settings=settings):
        return _refuse(403, "forbidden", f"origin {origin[:200]!r} is not allowed (COSMIC_WS_ALLOWED_ORIGINS)")
    hub = await _running_hub()
    if hub is None:
        return web.json_response({"error": "not ready", "reason": "the websocket hub is starting"}, status=503,
                                 headers={"Retry-After": "1"})
    principal: Principal | None = None
    token = ""
    if "Authorization" in request.headers:
        scheme, _, token = request.headers["Authorization"].partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("the Authorization header must be `Bearer <jwt>`")
            token = token.strip()
            principal = verify_token(token=token, settings=settings)
        except AuthError as exc:
            return _refuse(401, "unauthorized", str(exc))
    # compress=False: per-message deflate would compress every frame once per client, undoing the
    # serialize-once fan-out (the JSON frames are small; CPU is the scarce resource here).
    ws = web.WebSocketResponse(heartbeat=settings.ws_ping_seconds, max_msg_size=settings.ws_max_frame_bytes,
                               compress=False)
    if not ws.can_prepare(request).ok:
        return _refuse(400, "bad request", "GET /ws expects a websocket upgrade")
    await ws.prepare(request)
    if principal is None:
        authenticated = await _authenticate_first_frame(ws)
        if authenticated is None:
            return ws
        principal, token = authenticated
    await _serve(hub=hub, ws=ws, request=request, principal=principal, token=token)
    return ws


async def _serve(*, hub: WebsocketHub, ws: web.WebSocketResponse, request: web.Request, principal: Principal,
                 token: str) -> None:
    async def close(code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:120]), CLOSE_GRACE_SECONDS)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - unresponsive peer: drop it
            if request.transport is not None:
                request.transport.abort()

    conn = Connection(principal=principal, send=ws.send_str, close=close, queue_size=settings.ws_send_queue,
                      token=token)
    hub.attach(conn)
    conn.spawn(conn.run_sender())
    conn.offer(dumps({"type": "welcome", "user_id": principal.user_id, "operator": principal.operator}))
    try:
        async for msg in ws:
            if conn.closed:
                break
            if msg.type == WSMsgType.TEXT:
                await handle_frame(hub, conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.offer(error_frame(code="bad_frame", message="binary frames are not accepted; send JSON text"))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        closing = [t for t in conn.tasks if not t.done()] if conn.closed else []
        conn.finish()
        hub.detach(conn)
        if closing:  # a close in progress (4008, 1001): let it finish before the handler returns
            await asyncio.gather(*closing, return_exceptions=True)
