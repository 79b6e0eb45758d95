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
  recent notifications, newest first, with per-channel delivery status (``pending``,
  ``retrying`` with the attempt and error, ``delivered`` with the HTTP status, ``failed`` with
  the reason; ``feed``/``disabled``) and read state.
* ``POST /api/users/{user_id}/notification-preferences/secret``: a new webhook signing
  secret (the old one stops working once the worker applied it, moments later), returned
  once: ``202 {"user_id", "webhook_secret"}``.

A webhook URL is refused (400 naming ``webhook_url``) when its host is, or resolves to, an
internal address (:mod:`app.core.net_guard`; ``COSMIC_WEBHOOK_ALLOWED_NETWORKS`` allows some on
purpose). The first PUT of a user creates their signing secret and returns it once as
``webhook_secret`` (:mod:`app.core.webhook_signing`); later PUTs keep it and do not show it.

Every request needs a JWT (``Authorization: Bearer``, see :mod:`app.core.auth`) of that user
(``sub`` = user_id) or of an operator: 401 without a valid token, 403 for another user —
preferences name where notifications go, so nobody may redirect someone else's.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.core.auth import Principal
from app.core.errors import ConfigError, InvalidPreferences
from app.core.net_guard import ForbiddenAddress, UnresolvableHost, check_url
from app.core.timeutil import now_ms
from app.core.topic_specs import NOTIFICATION_PREFERENCES
from app.core.webhook_signing import master_key, new_salt, user_secret
from app.web.ingest import read_limited
from app.web.openapi import query_param
from app.web.route import Owner, endpoint, page, self_or_operator
from app.web.routing import fetch_from_owner, not_ready
from app.worker.main import app, settings
from tables.notification_deliveries import RECENT_PER_USER, notification_outcomes, notification_status
from tables.notification_preferences import (
    check_user_id,
    notification_preferences,
    parse_preferences,
    preferences_of,
)

PREFERENCES_TOPIC = NOTIFICATION_PREFERENCES
MAX_BODY_BYTES = 16 * 1024
DEFAULT_LIMIT = 20


#: That user (``sub`` = the path's user_id) or an operator.
SELF_OR_OPERATOR = self_or_operator(param="user_id", what="notifications")


async def _produce(web: View, *, user_id: str, value: bytes | None) -> Response | None:
    """Produce one preferences record; a 503 answer when Kafka did not acknowledge it."""
    try:
        await app.producer.send_and_wait(
            settings.topic_prefix + PREFERENCES_TOPIC, user_id.encode(), value, None, None, None
        )
    except KafkaError as exc:
        return web.json({"error": "Kafka did not acknowledge the update", "reason": repr(exc)}, status=503)
    return None


@page("/api/users/{user_id}/notification-preferences")
class NotificationPreferencesView(View):
    @endpoint(access=SELF_OR_OPERATOR, ready=True, owner=Owner(table=notification_preferences, key="user_id"),
              tags=["notifications"], summary="A user's notification preferences (or the defaults)",
              responses={200: '{"user_id", "channels", ...}'})
    async def get(self, request: Request, *, principal: Principal, user_id: str) -> Response:
        return self.json({"user_id": user_id, **public_preferences(preferences_of(user_id))})

    @endpoint(access=SELF_OR_OPERATOR, tags=["notifications"], summary="Set a user's notification preferences",
              request_body='{"channels": [WEBSOCKET|WEBHOOK|EMAIL], "webhook_url", "email"}',
              responses={202: '{"user_id", "preferences", "webhook_secret" (the first time only)}',
                         400: '{"error", "field", "reason"} (webhook_url: an internal address, or does not resolve)',
                         413: "body too large",
                         503: "Kafka did not acknowledge, or the owner worker is not known yet"})
    async def put(self, request: Request, *, principal: Principal, user_id: str) -> Response:
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
            if preferences["webhook_url"] is not None:
                await _check_webhook_host(preferences["webhook_url"])
        except InvalidPreferences as exc:
            return self.json(exc.to_dict(), status=400)
        value: dict[str, Any] = {**preferences, "updated_at": now_ms()}
        secret = None
        if "WEBHOOK" in preferences["channels"] or preferences["webhook_url"] is not None:
            try:
                key = master_key(settings)
            except ConfigError as exc:
                return self.json({"error": "webhooks are not available", "reason": str(exc)}, status=503)
            exists = await _has_secret(request, user_id)
            if exists is None:
                return not_ready(self, "the owner of this user's preferences is not known yet")
            if not exists:
                value["signing_salt"] = new_salt()
                secret = user_secret(key=key, user_id=user_id, salt=value["signing_salt"])
        failed = await _produce(self, user_id=user_id, value=json.dumps(value).encode())
        if failed is not None:
            return failed
        reply: dict[str, Any] = {"user_id": user_id, "preferences": public_preferences(value)}
        if secret is not None:
            reply["webhook_secret"] = secret
        return self.json(reply, status=202)

    @endpoint(access=SELF_OR_OPERATOR, tags=["notifications"],
              summary="Reset a user's notification preferences to the defaults",
              responses={202: '{"user_id", "preferences": null}', 400: "bad user_id", 503: "Kafka did not acknowledge"})
    async def delete(self, request: Request, *, principal: Principal, user_id: str) -> Response:
        try:
            check_user_id(user_id)
        except InvalidPreferences as exc:
            return self.json(exc.to_dict(), status=400)
        failed = await _produce(self, user_id=user_id, value=None)
        if failed is not None:
            return failed
        return self.json({"user_id": user_id, "preferences": None}, status=202)


@page("/api/users/{user_id}/notification-preferences/secret")
class WebhookSecretView(View):
    @endpoint(access=SELF_OR_OPERATOR, tags=["notifications"],
              summary="Rotate the user's webhook signing secret (returned once)",
              responses={202: '{"user_id", "webhook_secret"}',
                         503: "Kafka did not acknowledge, or webhook signing is not configured"})
    async def post(self, request: Request, *, principal: Principal, user_id: str) -> Response:
        """Rotate the user's webhook signing secret; the new one is in the answer, once."""
        try:
            check_user_id(user_id)
            key = master_key(settings)
        except InvalidPreferences as exc:
            return self.json(exc.to_dict(), status=400)
        except ConfigError as exc:
            return self.json({"error": "webhooks are not available", "reason": str(exc)}, status=503)
        current = await _stored(request, user_id)
        if current is None:
            return not_ready(self, "the owner of this user's preferences is not known yet")
        value = {k: current[k] for k in ("channels", "webhook_url", "email")}
        value.update(updated_at=now_ms(), signing_salt=new_salt())
        failed = await _produce(self, user_id=user_id, value=json.dumps(value).encode())
        if failed is not None:
            return failed
        return self.json({"user_id": user_id,
                          "webhook_secret": user_secret(key=key, user_id=user_id, salt=value["signing_salt"])},
                         status=202)


def public_preferences(preferences: dict[str, Any]) -> dict[str, Any]:
    """Preferences as the API shows them: the signing salt replaced by whether a secret exists."""
    shown = {k: v for k, v in preferences.items() if k != "signing_salt"}
    shown["signing_secret"] = bool(preferences.get("signing_salt"))
    return shown


async def _check_webhook_host(url: str) -> None:
    try:
        await check_url(url, allowed=settings.webhook_networks)
    except (ForbiddenAddress, UnresolvableHost) as exc:
        raise InvalidPreferences(field="webhook_url", reason=f"not allowed: {exc}") from None


async def _stored(request: Request, user_id: str) -> dict[str, Any] | None:
    """The user's preferences as the owning worker shows them (None: owner not known)."""
    path = f"/api/users/{user_id}/notification-preferences"
    try:
        answer = await fetch_from_owner(table=notification_preferences, key=user_id, request=request, path=path)
    except KeyError:
        return None
    if answer is None:
        return public_preferences(preferences_of(user_id))
    status, body = answer
    return body if status == 200 and isinstance(body, dict) else None


async def _has_secret(request: Request, user_id: str) -> bool | None:
    stored = await _stored(request, user_id)
    return None if stored is None else bool(stored.get("signing_secret"))


@page("/api/users/{user_id}/notifications")
@endpoint(access=SELF_OR_OPERATOR, ready=True, owner=Owner(table=notification_status, key="user_id"),
          tags=["notifications"], summary="A user's recent notifications, newest first",
          parameters=[query_param("limit", "1..50, default 20", kind="integer")],
          responses={200: '{"user_id", "notifications": [...]}', 400: "bad limit"})
async def recent_notifications(web: View, request: Request, *, principal: Principal, user_id: str) -> Response:
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= RECENT_PER_USER:
        return web.json({"error": "invalid limit", "field": "limit",
                         "reason": f"must be an integer from 1 to {RECENT_PER_USER}, got {raw_limit!r}"}, status=400)
    stored = notification_status.get(user_id) or {}
    outcomes = (notification_outcomes.get(user_id) or {}).get("outcomes", {})
    newest_first = []
    for entry in list(reversed(stored.get("notifications", [])))[:limit]:
        deliveries = dict(entry.get("deliveries", {}))
        for channel in deliveries:
            outcome = outcomes.get(f"{entry['notification_id']}:{channel}")
            if outcome is not None:
                deliveries[channel] = outcome
        newest_first.append({**entry, "deliveries": deliveries})
    return web.json({"user_id": user_id, "notifications": newest_first})
