"""``job_state``: job_id → everything about one job, in ONE value (one changelog record per
event, so a crash can never persist half of an event's effect on a job):

status, per-status timestamps, retry_count, user_id, job_type, last_event_id,
correlation_id, ``parked`` (early events waiting for a predecessor), ``offset`` (the last
source offset handled: the replay fence) and ``history`` (the last events handled, with the
transitions they caused, so a replay re-emits the same side effects).
"""

from __future__ import annotations

from app.core.topic_specs import JOB_LIFECYCLE
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

job_state = copartitioned_table(
    declare=fenced_table, name="job_state", topic=JOB_LIFECYCLE,
    help="job_id -> job state (see tables/job_state.py)",
)
