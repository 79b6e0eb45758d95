"""``notification_preferences``: user_id → how that user wants to be notified.

Value: ``{"channels": [subset of WEBSOCKET, WEBHOOK, EMAIL], "webhook_url": str | None,
"email": str | None, "updated_at": epoch ms}``; a user without an entry gets
:data:`DEFAULT_PREFERENCES` (the websocket feed only).

Faust tables are written only inside stream processing, so an update travels through the
compacted topic ``notification-preferences`` (key user_id, JSON value, 5 partitions like
``notifications``): ``PUT /api/users/{user_id}/notification-preferences`` validates and
produces it, the ``apply_notification_preferences`` agent validates it again and writes
this table. Both topics are keyed by user_id with the same partition count, so Faust
assigns a user's preference partition and notification partition to the same worker, and
the delivery agent reads a user's preferences locally.

:func:`parse_preferences` is the one validation of an update (HTTP and agent).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from app.core.errors import InvalidPreferences
from app.core.topic_specs import NOTIFICATION_PREFERENCES
from app.worker.batching import coalescing_table
from tables import copartitioned_table

CHANNELS = ("WEBSOCKET", "WEBHOOK", "EMAIL")
DEFAULT_PREFERENCES: dict[str, Any] = {"channels": ["WEBSOCKET"], "webhook_url": None, "email": None}
MAX_URL_LENGTH = 2048
MAX_EMAIL_LENGTH = 254
MAX_USER_ID_LENGTH = 256
_EMAIL_RE = re.compile(r"[^@\s<>,;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_FIELDS = ("channels", "webhook_url", "email")

notification_preferences = copartitioned_table(
    declare=coalescing_table, name="notification_preferences", topic=NOTIFICATION_PREFERENCES,
    help="user_id -> {channels, webhook_url, email, updated_at}",
)


def _fail(field: str, reason: str) -> InvalidPreferences:
    return InvalidPreferences(field=field, reason=reason)


def check_user_id(user_id: object) -> str:
    """A usable user id (the Kafka key of both topics), or InvalidPreferences."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise _fail("user_id", "must be a non-empty string")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise _fail("user_id", f"at most {MAX_USER_ID_LENGTH} characters")
    return user_id


def _check_url(value: object) -> str:
    if not isinstance(value, str):
        raise _fail("webhook_url", "must be an http:// or https:// URL string")
    if len(value) > MAX_URL_LENGTH:
        raise _fail("webhook_url", f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise _fail("webhook_url", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise _fail("webhook_url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail("webhook_url", f"must be an http:// or https:// URL with a host, got {value!r}")
    del port
    return value


def _check_email(value: object) -> str:
    if not isinstance(value, str):
        raise _fail("email", "must be an email address string")
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL_RE.fullmatch(value):
        raise _fail("email", f"not a plausible email address (name@example.org), got {value!r}")
    return value


def parse_preferences(data: object) -> dict[str, Any]:
    """Validate an update body and return the normalised value (without ``updated_at``).

    ``channels`` is required (an empty list mutes every channel; duplicates are dropped);
    ``webhook_url`` (http/https with a host) is required when WEBHOOK is chosen and
    ``email`` (a plausible address) when EMAIL is; given but unused, they are still checked
    and kept. Raises InvalidPreferences naming the field.
    """
    if not isinstance(data, dict):
        raise _fail("", "expected a JSON object with channels, webhook_url and email")
    for key in data:
        if key not in _FIELDS:
            raise _fail(str(key), f"unknown field; known: {', '.join(_FIELDS)}")
    if "channels" not in data:
        raise _fail("channels", f"required: a list of {', '.join(CHANNELS)}")
    raw_channels = data["channels"]
    if not isinstance(raw_channels, list):
        raise _fail("channels", f"must be a list of {', '.join(CHANNELS)}")
    channels: list[str] = []
    for item in raw_channels:
        if not isinstance(item, str) or item not in CHANNELS:
            raise _fail("channels", f"unknown channel {item!r}; one of {', '.join(CHANNELS)}")
        if item not in channels:
            channels.append(item)
    webhook_url = data.get("webhook_url")
    email = data.get("email")
    if webhook_url is not None:
        webhook_url = _check_url(webhook_url)
    elif "WEBHOOK" in channels:
        raise _fail("webhook_url", "required when WEBHOOK is among the channels")
    if email is not None:
        email = _check_email(email)
    elif "EMAIL" in channels:
        raise _fail("email", "required when EMAIL is among the channels")
    return {"channels": channels, "webhook_url": webhook_url, "email": email}


def preferences_of(user_id: str) -> dict[str, Any]:
    """The user's preferences, or the defaults (a copy either way)."""
    stored = notification_preferences.get(user_id)
    if stored is None:
        return {**DEFAULT_PREFERENCES, "channels": list(DEFAULT_PREFERENCES["channels"]), "default": True}
    return {**stored, "channels": list(stored["channels"]), "default": False}
