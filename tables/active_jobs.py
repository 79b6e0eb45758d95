"""``active_jobs``: "<partition>/<user_id>" → {"offset", "jobs": [active job ids]}.

A job is active while SUBMITTED, QUEUED or RUNNING. Keyed by the writing partition plus
user; a user's active jobs are the union over partitions. ``offset`` fences replays.
"""

from __future__ import annotations

from app.core.topic_specs import JOB_LIFECYCLE
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

active_jobs = copartitioned_table(
    declare=fenced_table, name="active_jobs", topic=JOB_LIFECYCLE,
    help="partition/user -> {offset, active job ids}",
)
