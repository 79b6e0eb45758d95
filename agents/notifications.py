"""Notifications: deliver each NotificationSent on the channels its user chose.

``apply_notification_preferences`` consumes the compacted ``notification-preferences``
topic (key user_id, JSON value ``{"channels", "webhook_url", "email"}``; an empty value
resets the user to the defaults) and writes ``notification_preferences`` after validating
again (:func:`tables.notification_preferences.parse_preferences`); an invalid update is
logged, counted in ``PREFERENCE_UPDATES["invalid"]`` and skipped — the topic has no
dead-letter topic, and a bad update never replaces good preferences.

``deliver_notifications`` consumes ``notifications`` (key user_id) through
:func:`app.streams.process_events`. For a NotificationSent, for each channel the user
prefers (the event's own ``channel`` field is not used for routing), unless
``notification_deliveries`` already holds ``"<notification_id>:<channel>"``:

* WEBSOCKET: nothing to send here — the websocket feed reads the ``notifications`` topic
  itself; recorded as ``feed``.
* WEBHOOK: POST the event as JSON (:func:`app.delivery.send_webhook`, timeout
  ``COSMIC_WEBHOOK_TIMEOUT_SECONDS``, ``Idempotency-Key`` = notification id).
* EMAIL: through ``COSMIC_SMTP_URL`` when configured, else recorded as ``disabled``.

Each success is recorded in ``notification_deliveries`` at once, so channels that already
delivered are skipped on a retry, a redelivery or a replay after a crash: one delivery per
event and channel. If a channel failed transiently the handler raises
:class:`~app.errors.RetriableError` once the other channels were tried; ``process_events``
retries with backoff up to ``COSMIC_MAX_ATTEMPTS`` and then dead-letters the event
(``retries-exhausted``). A channel that refused for good (HTTP 4xx…) makes the event a
dead letter at once (``delivery-rejected``), after the other channels were tried.

The remaining at-least-once window: if the worker dies after a webhook answered 2xx but
before the delivery record reached the changelog, the event is handled again after the
restart and the webhook gets one more POST with the same ``Idempotency-Key`` (an email, the
same ``Message-ID``). Receivers dedupe on it.

A NotificationRead marks the notification read in ``notification_status``, which also keeps
each user's recent notifications with their delivery status for
``GET /api/users/{user_id}/notifications``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

import app.streams as streams
from app.delivery import send_email, send_webhook
from app.errors import CosmicError, DeliveryFailed, DeliveryRejected, InvalidPreferences, RejectedEvent, RetriableError
from app.main import app, settings
from app.observability import IDEMPOTENCY_HITS as IDEMPOTENCY_HITS_METRIC, labelled
from app.models import EventBase, NotificationEvent, NotificationRead, NotificationSent
from app.streams import Origin, process_events, raw_topic
from app.topic_specs import spec_by_name
from app.topics import notifications_topic
from tables.notification_deliveries import RECENT_PER_USER, notification_deliveries, notification_status
from tables.notification_preferences import check_user_id, notification_preferences, parse_preferences, preferences_of

logger = logging.getLogger(__name__)

PREFERENCES_TOPIC = "notification-preferences"
#: Seconds one SMTP conversation may take.
SMTP_TIMEOUT_S = 10.0

#: Deliveries by (channel, status): delivered / feed / disabled / retrying / failed / rejected.
DELIVERY_COUNTS: Counter[tuple[str, str]] = Counter()
#: Preference updates by outcome: applied / reset / invalid.
PREFERENCE_UPDATES: Counter[str] = Counter()

notification_preferences_topic = raw_topic(
    PREFERENCES_TOPIC, partitions=spec_by_name(PREFERENCES_TOPIC).partitions
)


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- preferences -------------------------------------------------------------------------------
def apply_preference_update(*, key: bytes | None, value: bytes | None) -> str:
    """Validate one record of ``notification-preferences`` and write the table; the outcome."""
    try:
        user_id = check_user_id((key or b"").decode("utf-8"))
    except (UnicodeDecodeError, InvalidPreferences) as exc:
        logger.warning("notification preferences with an unusable key %r skipped: %s", key, exc)
        PREFERENCE_UPDATES["invalid"] += 1
        return "invalid"
    if not value:
        notification_preferences.pop(user_id, None)
        PREFERENCE_UPDATES["reset"] += 1
        return "reset"
    try:
        data = json.loads(value)
        updated_at = data.pop("updated_at", None) if isinstance(data, dict) else None
        preferences = parse_preferences(data)
    except (UnicodeDecodeError, ValueError, InvalidPreferences) as exc:
        logger.warning("invalid notification preferences of %s skipped: %s", user_id, exc)
        PREFERENCE_UPDATES["invalid"] += 1
        return "invalid"
    if not isinstance(updated_at, int) or isinstance(updated_at, bool):
        updated_at = _now_ms()
    notification_preferences[user_id] = {**preferences, "updated_at": updated_at}
    PREFERENCE_UPDATES["applied"] += 1
    return "applied"


@app.agent(notification_preferences_topic, concurrency=1)
async def apply_notification_preferences(stream):
    async for event in stream.events():
        yield apply_preference_update(key=event.message.key, value=event.message.value)


# -- delivery ----------------------------------------------------------------------------------
class _Attempts:
    """Tries per channel of the record being handled (the agent handles one at a time)."""

    def __init__(self) -> None:
        self.origin: tuple[str, int, int, str] | None = None
        self.counts: Counter[str] = Counter()

    def bump(self, origin: Origin, notification_id: str, channel: str) -> int:
        where = (origin.topic, origin.partition, origin.offset, notification_id)
        if where != self.origin:
            self.origin, self.counts = where, Counter()
        self.counts[channel] += 1
        return self.counts[channel]


_attempts = _Attempts()


async def _deliver(channel: str, event: NotificationSent, preferences: dict[str, Any]) -> str:
    """Deliver on one channel; the status to record (raises DeliveryFailed / DeliveryRejected)."""
    if channel == "WEBSOCKET":
        return "feed"
    if channel == "WEBHOOK":
        await send_webhook(url=preferences["webhook_url"], event=event,
                           timeout_s=settings.webhook_timeout_seconds)
        return "delivered"
    if channel == "EMAIL":
        if not settings.smtp_url:
            return "disabled"
        await send_email(smtp_url=settings.smtp_url, sender=settings.smtp_from, recipient=preferences["email"],
                         event=event, timeout_s=SMTP_TIMEOUT_S)
        return "delivered"
    raise DeliveryRejected(f"unknown channel {channel}", channel=channel)


def _status_entry(entries: list[dict[str, Any]], event: NotificationEvent) -> dict[str, Any]:
    """The user's entry for ``event``'s notification (appended, oldest dropped, when new)."""
    for entry in entries:
        if entry["notification_id"] == event.notification_id:
            return entry
    entry = {
        "notification_id": event.notification_id, "job_id": event.job_id, "severity": event.severity,
        "title": event.title, "at": int(event.timestamp.timestamp() * 1000), "read": False, "read_at": None,
        "deliveries": {},
    }
    entries.append(entry)
    del entries[:-RECENT_PER_USER]
    return entry


def _load_entries(user_id: str) -> list[dict[str, Any]]:
    stored = notification_status.get(user_id) or {}
    return [dict(e, deliveries=dict(e.get("deliveries", {}))) for e in stored.get("notifications", [])]


async def handle_notification(event: EventBase, origin: Origin) -> None:
    if not isinstance(event, NotificationEvent):
        raise RejectedEvent(f"{event.event_type} does not belong on notifications", reason="unexpected-event")
    user_id = event.user_id
    if not user_id:
        raise RejectedEvent(f"notification {event.notification_id} names no user", reason="no-user")
    entries = _load_entries(user_id)
    if isinstance(event, NotificationRead):
        entry = _status_entry(entries, event)
        if not entry["read"]:
            entry["read"], entry["read_at"] = True, int(event.timestamp.timestamp() * 1000)
            notification_status[user_id] = {"notifications": entries}
        return
    assert isinstance(event, NotificationSent)
    preferences = preferences_of(user_id)
    known = any(e["notification_id"] == event.notification_id for e in entries)
    entry = _status_entry(entries, event)
    changed = not known
    retriable: list[CosmicError] = []
    rejected: list[CosmicError] = []
    for channel in preferences["channels"]:
        key = f"{event.notification_id}:{channel}"
        if key in notification_deliveries:
            # Delivered before (a retry, a redelivery or a replay): nothing is sent again, and
            # what was recorded is written again, unchanged — its changelog record may have died
            # with a killed worker (as in agents/job_lifecycle.py; only replayed events can be).
            notification_deliveries[key] = notification_deliveries[key]
            changed = True
            labelled(IDEMPOTENCY_HITS_METRIC, "deliver_notifications").inc()
            continue
        attempts = _attempts.bump(origin, event.notification_id, channel)
        changed = True
        try:
            status = await _deliver(channel, event, preferences)
        except (DeliveryFailed, DeliveryRejected) as exc:
            final = isinstance(exc, DeliveryRejected) or attempts >= streams.settings.max_attempts
            status = "rejected" if isinstance(exc, DeliveryRejected) else ("failed" if final else "retrying")
            (rejected if isinstance(exc, DeliveryRejected) else retriable).append(exc)
            entry["deliveries"][channel] = {"channel": channel, "status": status, "at": _now_ms(),
                                            "attempts": attempts, "error": str(exc)[:500]}
            DELIVERY_COUNTS[(channel, status)] += 1
            logger.warning("notification %s to %s on %s: %s (attempt %d): %s", event.notification_id,
                           user_id, channel, status, attempts, exc)
            continue
        record = {"channel": channel, "status": status, "at": _now_ms(), "attempts": attempts}
        notification_deliveries[key] = record
        entry["deliveries"][channel] = record
        DELIVERY_COUNTS[(channel, status)] += 1
    if changed:
        notification_status[user_id] = {"notifications": entries}
    if retriable:
        raise RetriableError("; ".join(str(e) for e in retriable + rejected)) from retriable[0]
    if rejected:
        raise RejectedEvent("; ".join(str(e) for e in rejected), reason="delivery-rejected") from rejected[0]


# Delivers and records state: concurrency 1, so Faust never commits past an in-flight event.
@app.agent(notifications_topic, concurrency=1)
async def deliver_notifications(stream):
    async for result in process_events(stream, topic="notifications", handler=handle_notification):
        yield result
