"""Signed webhooks: ``X-Cosmic-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``.

Each user has a signing secret, ``whsec_<64 hex>``. It is never stored: it is derived as
``HMAC-SHA256(master key, "<user_id>:<salt>")``, where the salt is a random value kept with
the user's preferences (``signing_salt``) and the master key is ``COSMIC_WEBHOOK_SIGNING_KEY``
(or, when that is empty, a key derived from ``COSMIC_JWT_SECRET``). So ``cosmic table dump``,
the ``notification-preferences`` topic, RabbitMQ delivery messages and the logs carry only the
salt, which is useless without the master key; every worker of the group derives the same
secret. The secret is returned once, by the PUT that created it or by a rotation (a new salt).
Changing the master key changes every user's secret.

A receiver verifies (see ``docs/notifications.md``): recompute the HMAC over
``f"{t}.".encode() + raw_body`` with the secret (as UTF-8 bytes) and compare in constant time,
and refuse a ``t`` too far from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from app.core.errors import ConfigError
from app.core.settings import Settings

SIGNATURE_HEADER = "X-Cosmic-Signature"
SECRET_PREFIX = "whsec_"
#: How far a receiver should let ``t`` be from its clock (seconds): the default of :func:`verify`.
DEFAULT_TOLERANCE_S = 300


def master_key(settings: Settings) -> bytes:
    """The key every user's secret is derived from (ConfigError when none is configured)."""
    if settings.webhook_signing_key:
        return settings.webhook_signing_key.encode()
    if settings.jwt_secret:
        return hmac.new(settings.jwt_secret.encode(), b"cosmic-horizons webhook signing", hashlib.sha256).digest()
    raise ConfigError("webhooks need a signing key: set COSMIC_WEBHOOK_SIGNING_KEY (or COSMIC_JWT_SECRET)")


def new_salt() -> str:
    return secrets.token_hex(16)


def user_secret(*, key: bytes, user_id: str, salt: str) -> str:
    """The signing secret of ``user_id`` for ``salt``."""
    digest = hmac.new(key, f"{user_id}:{salt}".encode(), hashlib.sha256).hexdigest()
    return SECRET_PREFIX + digest


def sign(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Cosmic-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(*, secret: str, body: bytes, header: str, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within tolerance."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
