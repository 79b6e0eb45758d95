"""``runtime_stats``: ``<partition>|<job_type>`` → Welford state and histogram of the
runtimes of the type's completed jobs seen on that ``job-lifecycle`` partition (a GlobalTable).

Value: ``{"offset", "n", "mean", "m2", "min", "max", "buckets": [counts per
app.core.metrics_math.RUNTIME_BUCKETS]}``. Per source partition so each key has one writer and
sits in the changelog partition of the events that write it; global so that every worker
merges all partitions (:func:`app.core.metrics_math.welford_merge`) into the type's exact mean
and variance — both for judging a completed job and for the overrun check on the metrics
side.
"""

from __future__ import annotations

from app.core.topic_specs import JOB_LIFECYCLE, spec_by_name
from app.worker.main import app
from app.worker.table_fencing import fenced_global_table

runtime_stats = fenced_global_table(
    app,
    "runtime_stats", default=None, key_type=str, partitions=spec_by_name(JOB_LIFECYCLE).partitions,
    help="partition|job_type -> Welford state and histogram of completed runtimes (global)",
)
