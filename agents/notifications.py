"""Notifications: deliver each NotificationSent on the channels its user chose.

``apply_notification_preferences`` consumes the compacted ``notification-preferences``
topic (key user_id, JSON value ``{"channels", "webhook_url", "email"}``; an empty value
resets the user to the defaults) and writes ``notification_preferences`` after validating
again (:func:`tables.notification_preferences.parse_preferences`); an invalid update is
logged, counted in ``PREFERENCE_UPDATES["invalid"]`` and skipped — the topic has no
dead-letter topic, and a bad update never replaces good preferences.

``deliver_notifications`` consumes ``notifications`` (key user_id) through
:func:`app.worker.streams.process_events` and decides; it sends nothing itself. For a
NotificationSent, for each channel the user prefers (the event's own ``channel`` field is not
used for routing), unless ``notification_deliveries`` already holds
``"<notification_id>:<channel>"``:

* WEBSOCKET: the websocket feed reads the ``notifications`` topic itself; recorded as ``feed``.
* WEBHOOK, EMAIL: one delivery message is published to the RabbitMQ queue
  ``notification-delivery`` (:mod:`app.worker.notification_delivery`), confirmed within the bridge's
  window before the batch is acked; recorded as ``pending``. EMAIL without ``COSMIC_SMTP_URL``
  is recorded as ``disabled``.

The delivery workers (:class:`DeliverNotifications`, a service of every worker) send, retry
through RabbitMQ's retry queues and report each attempt on ``notification-outcomes``;
``record_notification_outcomes`` applies those to ``notification_outcomes``. One slow or dead
endpoint therefore delays only its own deliveries.

``deliver_notifications`` is the topic's only reader: it also copies each decodable record
to RabbitMQ's ``notifications`` exchange in its batch (``COSMIC_RABBITMQ_BRIDGE_ENABLED``,
:mod:`app.worker.rabbit_bridge`).

A ``pending`` record with no outcome yet is published again when its event is handled again
(its publish may not have been confirmed before a crash): at least once, with the same
``Idempotency-Key`` (an email, the same ``Message-ID``) for receivers to dedupe on.

A NotificationRead marks the notification read in ``notification_status``, which also keeps
each user's recent notifications with their delivery status for
``GET /api/users/{user_id}/notifications``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from app.core.errors import InvalidPreferences, RejectedEvent
from app.core.models import EventBase, NotificationEvent, NotificationRead, NotificationSent
from app.core.timeutil import now_ms, utc_ms
from app.core.topic_specs import NOTIFICATIONS, NOTIFICATION_PREFERENCES, spec_by_name
from app.worker import rabbit_bridge as _rabbit_bridge  # noqa: F401 - registers the RabbitMQ service (deliveries need it)
from app.worker.batching import active_batch
from app.worker.main import app, settings
from app.worker.notification_delivery import OUTCOMES_TOPIC, NotificationDelivery, delivery_message
from app.worker.observability import IDEMPOTENCY_HITS as IDEMPOTENCY_HITS_METRIC, labelled
from app.worker.rabbit_topology import NOTIFICATION_DELIVERY
from app.worker.streams import Origin, process_events, raw_topic
from app.worker.topics import notifications_topic
from tables.notification_deliveries import (
    OUTCOMES_PER_USER,
    RECENT_PER_USER,
    notification_deliveries,
    notification_outcomes,
    notification_status,
)
from tables.notification_preferences import check_user_id, notification_preferences, parse_preferences, preferences_of

logger = logging.getLogger(__name__)

PREFERENCES_TOPIC = NOTIFICATION_PREFERENCES

#: Channel states by (channel, status): pending / feed / disabled, then retrying / delivered / failed.
DELIVERY_COUNTS: Counter[tuple[str, str]] = Counter()
#: Preference updates by outcome: applied / reset / invalid.
PREFERENCE_UPDATES: Counter[str] = Counter()
#: Delivery outcomes by what was done: applied / stale / invalid.
OUTCOME_UPDATES: Counter[str] = Counter()

notification_preferences_topic = raw_topic(
    PREFERENCES_TOPIC, partitions=spec_by_name(PREFERENCES_TOPIC).partitions
)
notification_outcomes_topic = raw_topic(OUTCOMES_TOPIC, partitions=spec_by_name(OUTCOMES_TOPIC).partitions)



@app.service
class DeliverNotifications(NotificationDelivery):
    """This worker's delivery workers (consume the RabbitMQ queue ``notification-delivery``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, faust_app=app, settings=settings, **kwargs)


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
        salt = data.pop("signing_salt", None) if isinstance(data, dict) else None
        preferences = parse_preferences(data)
        if salt is not None and (not isinstance(salt, str) or not 16 <= len(salt) <= 128):
            raise InvalidPreferences(field="signing_salt", reason="must be a string of 16 to 128 characters")
    except (UnicodeDecodeError, ValueError, InvalidPreferences) as exc:
        logger.warning("invalid notification preferences of %s skipped: %s", user_id, exc)
        PREFERENCE_UPDATES["invalid"] += 1
        return "invalid"
    if not isinstance(updated_at, int) or isinstance(updated_at, bool):
        updated_at = now_ms()
    if salt is None:  # an update that does not rotate the secret keeps the user's salt
        salt = (notification_preferences.get(user_id) or {}).get("signing_salt")
    notification_preferences[user_id] = {**preferences, "updated_at": updated_at, "signing_salt": salt}
    PREFERENCE_UPDATES["applied"] += 1
    return "applied"


@app.agent(notification_preferences_topic, concurrency=1)
async def apply_notification_preferences(stream):
    async for event in stream.events():
        yield apply_preference_update(key=event.message.key, value=event.message.value)


# -- deciding the deliveries ----------------------------------------------------------------------
def _status_entry(entries: list[dict[str, Any]], event: NotificationEvent) -> dict[str, Any]:
    """The user's entry for ``event``'s notification (appended, oldest dropped, when new), the
    caller's own to change: a stored entry is copied into ``entries`` first."""
    for i, entry in enumerate(entries):
        if entry["notification_id"] == event.notification_id:
            entries[i] = entry = dict(entry, deliveries=dict(entry.get("deliveries", {})))
            return entry
    entry = {
        "notification_id": event.notification_id, "job_id": event.job_id, "severity": event.severity,
        "title": event.title, "at": utc_ms(event.timestamp), "read": False, "read_at": None,
        "deliveries": {},
    }
    entries.append(entry)
    del entries[:-RECENT_PER_USER]
    return entry


def _load_entries(user_id: str) -> list[dict[str, Any]]:
    """The user's stored entries as a new list; the entries themselves are the stored ones
    (:func:`_status_entry` copies the one that is changed)."""
    stored = notification_status.get(user_id) or {}
    return list(stored.get("notifications", []))


def _has_outcome(user_id: str, key: str) -> bool:
    """Whether a delivery worker reported on ``key`` (so its message was published)."""
    return key in ((notification_outcomes.get(user_id) or {}).get("outcomes") or {})


class _Queued:
    """Deliveries this process published (or has queued in a batch that will not be acked
    before they are confirmed): the same notification handled again while the process lives
    is not published twice. Bounded (oldest forgotten): forgetting costs at most a duplicate."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._keys: dict[str, None] = {}

    def add(self, key: str) -> None:
        self._keys[key] = None
        if len(self._keys) > self.LIMIT:
            self._keys.pop(next(iter(self._keys)))

    def __contains__(self, key: str) -> bool:
        return key in self._keys


_queued = _Queued()


async def _queue_delivery(event: NotificationSent, channel: str, preferences: dict[str, Any]) -> None:
    """Publish the delivery message, confirmed before the batch is acked."""
    from app.worker.rabbit_bridge import wait_for_bridge

    message = delivery_message(event=event, channel=channel, preferences=preferences)
    bridge = await wait_for_bridge()

    def publish() -> Any:
        return bridge.publish_message(exchange_name="", routing_key=NOTIFICATION_DELIVERY, body=message.body,
                                      properties=message.properties)

    batch = active_batch()
    if batch is None:
        await publish()
    else:
        batch.defer(publish)


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
            entry["read"], entry["read_at"] = True, utc_ms(event.timestamp)
            notification_status[user_id] = {"notifications": entries}
        return
    assert isinstance(event, NotificationSent)
    preferences = preferences_of(user_id)
    known = any(e["notification_id"] == event.notification_id for e in entries)
    entry = _status_entry(entries, event)
    changed = not known
    for channel in preferences["channels"]:
        key = f"{event.notification_id}:{channel}"
        recorded = notification_deliveries[key].value() if key in notification_deliveries else None
        if recorded is not None and (recorded["status"] != "pending" or key in _queued
                                     or _has_outcome(user_id, key)):
            # Handed on before (a redelivery or a replay): nothing is sent again, and what was
            # recorded is written again, unchanged — its changelog record may have died with a
            # killed worker (as in agents/job_lifecycle.py; only replayed events can be).
            notification_deliveries[key] = recorded
            changed = True
            labelled(IDEMPOTENCY_HITS_METRIC, "deliver_notifications").inc()
            continue
        # New, or pending from before a crash with no outcome yet: its publish may not have been
        # confirmed, so it is published again (same message_id; receivers dedupe by Idempotency-Key).
        if channel == "WEBSOCKET":
            status = "feed"  # the websocket feed reads the notifications topic itself
        elif channel == "EMAIL" and not settings.smtp_url:
            status = "disabled"
        elif channel in ("WEBHOOK", "EMAIL"):
            await _queue_delivery(event, channel, preferences)
            _queued.add(key)
            status = "pending"
        else:
            raise RejectedEvent(f"unknown channel {channel}", reason="delivery-rejected")
        record = {"channel": channel, "status": status, "at": now_ms(), "attempts": 0 if status == "pending" else 1}
        notification_deliveries[key] = record
        entry["deliveries"][channel] = record
        DELIVERY_COUNTS[(channel, status)] += 1
        changed = True
    if changed:
        notification_status[user_id] = {"notifications": entries}


# -- delivery outcomes ---------------------------------------------------------------------------
_FINAL = frozenset({"delivered", "failed"})


def apply_outcome(*, key: bytes | None, value: bytes | None) -> str:
    """Record one delivery outcome of ``notification-outcomes``; what was done with it.

    Outcomes of one delivery arrive in order (one key, one partition, and a delivery worker
    reports an attempt before the message is retried or acked), but a redelivered message can
    report again: a final outcome is never replaced by a ``retrying`` one, nor by an earlier
    attempt's."""
    try:
        user_id = (key or b"").decode("utf-8")
        data = json.loads(value or b"")
        delivery = f"{data['notification_id']}:{data['channel']}"
        status, attempts = data["status"], int(data["attempts"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        logger.warning("unusable delivery outcome %r skipped: %s", value, exc)
        OUTCOME_UPDATES["invalid"] += 1
        return "invalid"
    stored = notification_outcomes.get(user_id) or {}
    outcomes = dict(stored.get("outcomes") or {})
    previous = outcomes.get(delivery)
    if previous is not None and (
        (previous["status"] in _FINAL and status not in _FINAL) or previous["attempts"] > attempts
    ):
        OUTCOME_UPDATES["stale"] += 1
        return "stale"
    outcomes.pop(delivery, None)
    outcomes[delivery] = {k: data.get(k) for k in ("channel", "status", "attempts", "at", "http_status",
                                                      "error", "reason")}
    while len(outcomes) > OUTCOMES_PER_USER:
        outcomes.pop(next(iter(outcomes)))
    notification_outcomes[user_id] = {"outcomes": outcomes}
    DELIVERY_COUNTS[(data["channel"], status)] += 1
    OUTCOME_UPDATES["applied"] += 1
    return "applied"


# Writes one table, read by the deliveries decision: concurrency 1.
@app.agent(notification_outcomes_topic, concurrency=1)
async def record_notification_outcomes(stream):
    async for event in stream.events():
        try:
            yield apply_outcome(key=event.message.key, value=event.message.value)
        except Exception:  # noqa: BLE001 - one bad record must not stop the agent
            logger.exception("delivery outcome at %s/%d skipped", event.message.partition, event.message.offset)
            OUTCOME_UPDATES["invalid"] += 1
            yield "invalid"


# Decides and records state: concurrency 1, so Faust never commits past an in-flight event.
@app.agent(notifications_topic, concurrency=1)
async def deliver_notifications(stream):
    async for result in process_events(stream, topic=NOTIFICATIONS, handler=handle_notification,
                                       copy_to_rabbitmq=settings.rabbitmq_bridge_enabled,
                                       max_wait_ms=settings.background_batch_max_wait_ms):
        yield result
