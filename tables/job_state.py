"""``job_state``: job_id → the job's current state, partitioned like ``job-lifecycle``."""

from __future__ import annotations

from app.main import app
from app.topic_specs import spec_by_name

job_state = app.Table(
    "job_state",
    default=None,
    key_type=str,
    partitions=spec_by_name("job-lifecycle").partitions,
    help="job_id -> {status, updated_at, last_event_id, user_id, correlation_id, events}",
)
