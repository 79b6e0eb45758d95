"""``processed_events``: event_id → 1, for applying each event exactly once.

Bounded: a tumbling window of one day by *event time* (the Kafka timestamp is the event's
own timestamp, so every copy of an event falls in the same window), windows expire seven
days after the newest event seen on their partition. Redeliveries (producer retries, a
worker replaying after a crash) arrive within minutes, far inside that window; an older
copy is still caught by the job's own history in ``job_state``.
"""

from __future__ import annotations

from datetime import timedelta

from app.main import app, settings
from app.topic_specs import spec_by_name

DEDUPE_WINDOW = timedelta(days=1)

processed_events = app.Table(
    "processed_events",
    default=int,
    key_type=str,
    value_type=int,
    partitions=spec_by_name("job-lifecycle").partitions,
    help="event_id -> 1 once applied (windowed, expiring)",
).tumbling(DEDUPE_WINDOW, expires=timedelta(hours=settings.dedupe_window_hours))
