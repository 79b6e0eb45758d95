"""Notification preferences and recent notifications of a user.

* ``PUT /api/users/{user_id}/notification-preferences`` with ``{"channels": [...],
  "webhook_url": ..., "email": ...}``: validated (400 ``{"error", "field", "reason"}``),
  then produced to the compacted topic ``notification-preferences`` (key user_id); answers
  ``202 {"user_id", "preferences"}`` once Kafka acknowledged it. The worker owning the user
  applies it to ``notification_preferences`` moments later (GET shows it then).
* ``DELETE`` of the same path: produces a tombstone, back to the defaults (202).
* ``GET`` of the same path: the stored preferences, or the defaults (``"default": true``),
  answered by the worker owning the user.
* ``GET /api/users/{user_id}/notifications?limit=N`` (1..50, default 20): the user's most
  recent notifications, newest first, with per-channel delivery status and read state.

Every request needs a JWT (``Authorization: Bearer``, see :mod:`app.auth`) of that user
(``sub`` = user_id) or of an operator: 401 without a valid token, 403 for another user —
preferences name where notifications go, so nobody may redirect someone else's.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, Awaitable, Callable

from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.auth import AuthError, authenticate
from app.errors import InvalidPreferences
from app.main import app, settings
from app.web.ingest import read_limited
from app.web.routing import owner_routed
from tables.notification_deliveries import RECENT_PER_USER, notification_status
from tables.notification_preferences import (
    check_user_id,
    notification_preferences,
    parse_preferences,
    preferences_of,
)

PREFERENCES_TOPIC = "notification-preferences"
MAX_BODY_BYTES = 16 * 1024
DEFAULT_LIMIT = 20


def self_or_operator(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Let the request through only with a token of ``user_id`` itself or of an operator."""

    @functools.wraps(handler)
    async def view(web: View, request: Request, **kwargs: Any) -> Response:
        try:
            principal = authenticate(headers=request.headers, query=request.query, settings=settings)
        except AuthError as exc:
            return web.json({"error": str(exc)}, status=exc.status)
        if principal.user_id != kwargs["user_id"] and not principal.operator:
            return web.json({"error": f"user {principal.user_id} may not access {kwargs['user_id']}'s notifications"},
                            status=403)
        return await handler(web, request, **kwargs)

    return view


async def _produce(web: View, *, user_id: str, value: bytes | None) -> Response | None:
    """Produce one preferences record; a 503 answer when Kafka did not acknowledge it."""
    try:
        await app.producer.send_and_wait(
            settings.topic_prefix + PREFERENCES_TOPIC, user_id.encode(), value, None, None, None
        )
    except KafkaError as exc:
        return web.json({"error": "Kafka did not acknowledge the update", "reason": repr(exc)}, status=503)
    return None


@app.page("/api/users/{user_id}/notification-preferences")
class NotificationPreferencesView(View):
    @self_or_operator
    @owner_routed(table=notification_preferences, match_info="user_id")
    async def get(self, request: Request, user_id: str) -> Response:
        return self.json({"user_id": user_id, **preferences_of(user_id)})

    @self_or_operator
    async def put(self, request: Request, user_id: str) -> Response:
        raw = await read_limited(request, limit=MAX_BODY_BYTES)
        if raw is None:
            return self.json({"error": "body too large", "limit_bytes": MAX_BODY_BYTES}, status=413)
        try:
            check_user_id(user_id)
            try:
                data = json.loads(raw)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # Recursion: nested too deeply
                return self.json({"error": "malformed JSON", "field": "", "reason": str(exc)}, status=400)
            preferences = parse_preferences(data)
        except InvalidPreferences as exc:
            return self.json(exc.to_dict(), status=400)
        value = {**preferences, "updated_at": int(time.time() * 1000)}
        failed = await _produce(self, user_id=user_id, value=json.dumps(value).encode())
        if failed is not None:
            return failed
        return self.json({"user_id": user_id, "preferences": value}, status=202)

    @self_or_operator
    async def delete(self, request: Request, user_id: str) -> Response:
        try:
            check_user_id(user_id)
        except InvalidPreferences as exc:
            return self.json(exc.to_dict(), status=400)
        failed = await _produce(self, user_id=user_id, value=None)
        if failed is not None:
            return failed
        return self.json({"user_id": user_id, "preferences": None}, status=202)


@app.page("/api/users/{user_id}/notifications")
@self_or_operator
@owner_routed(table=notification_status, match_info="user_id")
async def recent_notifications(web: View, request: Request, user_id: str) -> Response:
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= RECENT_PER_USER:
        return web.json({"error": "invalid limit", "field": "limit",
                         "reason": f"must be an integer from 1 to {RECENT_PER_USER}, got {raw_limit!r}"}, status=400)
    stored = notification_status.get(user_id) or {}
    newest_first = list(reversed(stored.get("notifications", [])))[:limit]
    return web.json({"user_id": user_id, "notifications": newest_first})
