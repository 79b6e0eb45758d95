"""``active_jobs``: "<partition>/<user_id>" → {"offset", "jobs": [active job ids]}.

A job is active while SUBMITTED, QUEUED or RUNNING. Keyed by the writing partition plus
user; a user's active jobs are the union over partitions. ``offset`` fences replays.
"""

from __future__ import annotations

from app.main import app
from app.table_fencing import fenced_table
from app.topic_specs import JOB_LIFECYCLE, spec_by_name

active_jobs = fenced_table(
    app,
    "active_jobs",
    default=None,
    key_type=str,
    partitions=spec_by_name(JOB_LIFECYCLE).partitions,
    help="partition/user -> {offset, active job ids}",
)
