"""What the ``deliver_notifications`` agent did with each notification.

``notification_deliveries``: ``"<notification_id>:<channel>"`` → ``{"channel", "status",
"at", "attempts"}``, written once a channel was handed on: ``pending`` (a delivery message
was published to RabbitMQ), ``feed`` for the websocket feed, ``disabled`` for email without
SMTP. A channel with an entry is not handed on again unless it is ``pending`` with no outcome
yet (its publish may not have been confirmed before a crash), which makes delivery once per
notification and channel across redeliveries, replays and worker restarts. Bounded: a tumbling
window of one day by the record's Kafka timestamp (the notification's own timestamp, the
same for every copy of it), expiring ``COSMIC_DEDUPE_WINDOW_HOURS`` (7 days, the
retention of ``notifications``) after the newest record of its partition.

``notification_status``: user_id → ``{"notifications": [...]}``, the user's most recent
:data:`RECENT_PER_USER` notifications, newest last, each ``{"notification_id", "job_id",
"severity", "title", "at", "read", "read_at", "deliveries": {channel: {...}}}`` — what
``GET /api/users/{user_id}/notifications`` answers. A NotificationRead marks its entry read.

``notification_outcomes``: user_id → ``{"outcomes": {"<notification_id>:<channel>": {"channel",
"status", "attempts", "at", "http_status", "error", "reason"}}}``, the latest outcome of each
delivery (``retrying``, ``delivered``, ``failed``) as the delivery workers reported it on
``notification-outcomes``; written only by ``record_notification_outcomes`` (one writer per
table), bounded to :data:`OUTCOMES_PER_USER` entries, oldest dropped.

The first two are written while handling a record of ``notifications`` (key user_id): a key derived
from a notification id lives on the partition of the notification's user, so Faust's
sharding stays consistent, and ``notification_status`` (keyed by user_id) can be
owner-routed.
"""

from __future__ import annotations

from datetime import timedelta

from app.core.topic_specs import NOTIFICATIONS, NOTIFICATION_OUTCOMES
from app.worker.batching import coalescing_table
from app.worker.main import settings
from tables import copartitioned_table

RECENT_PER_USER = 50
#: Outcomes kept per user: every channel of the recent notifications.
OUTCOMES_PER_USER = RECENT_PER_USER * 3
DELIVERY_WINDOW = timedelta(days=1)

notification_deliveries = copartitioned_table(
    declare=coalescing_table, name="notification_deliveries", topic=NOTIFICATIONS,
    help="notification_id:channel -> {channel, status, at, attempts} (windowed, expiring)",
).tumbling(DELIVERY_WINDOW, expires=timedelta(hours=settings.dedupe_window_hours))

notification_status = copartitioned_table(
    declare=coalescing_table, name="notification_status", topic=NOTIFICATIONS,
    help="user_id -> {notifications: recent notifications with delivery status}",
)

notification_outcomes = copartitioned_table(
    declare=coalescing_table, name="notification_outcomes", topic=NOTIFICATION_OUTCOMES,
    help="user_id -> {outcomes: {notification_id:channel -> latest delivery outcome}}",
)
