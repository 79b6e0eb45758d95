"""``job_counts``: source partition → {"offset", "counts": {status: jobs in it}}.

Keyed by the partition that writes it (so Faust's sharding stays consistent); the
cluster-wide count of a status is the sum over partitions. ``offset`` fences replays.
"""

from __future__ import annotations

from app.core.topic_specs import JOB_LIFECYCLE
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

job_counts = copartitioned_table(
    declare=fenced_table, name="job_counts", topic=JOB_LIFECYCLE,
    help="partition -> {offset, counts by status}",
)
