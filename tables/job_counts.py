"""``job_counts``: source partition → {"offset", "counts": {status: jobs in it}}.

Keyed by the partition that writes it (so Faust's sharding stays consistent); the
cluster-wide count of a status is the sum over partitions. ``offset`` fences replays.
"""

from __future__ import annotations

from app.main import app
from app.table_fencing import fenced_table
from app.topic_specs import JOB_LIFECYCLE, spec_by_name

job_counts = fenced_table(
    app,
    "job_counts",
    default=None,
    key_type=str,
    partitions=spec_by_name(JOB_LIFECYCLE).partitions,
    help="partition -> {offset, counts by status}",
)
