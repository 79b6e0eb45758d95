"""Tables of the job-metrics analytics, all written by ``track_job_metrics`` while it handles
an event of ``job-metrics`` (20 partitions, key job_id), so each has 20 partitions and Faust
writes every change to the changelog partition of the sample being handled.

* ``job_metric_rollups``: job_id → the job's rollup (:mod:`app.core.metrics_math`) plus
  ``offset`` (fence of the last applied sample), first/last sample times, the largest
  ``execution_time_s``, its nodes, and the overrun alert it raised, if any. Keyed like the
  topic, so ``GET /api/metrics/jobs/{job_id}`` is routed to the owner of the key.
* ``metric_windows``: ``<partition>|<window>|<scope>|<start>|<name>`` → one window's rollup
  (scope ``node`` or ``cluster``; windows 1m, 1h, 1d by event time) plus ``offset``.
* ``gpu_latest``: ``<partition>|<node>|<gpu_id>`` → the newest sample (by event time) of
  that GPU seen on that partition.
* ``slow_jobs``: ``<partition>`` → ``{"offset", "jobs": [...]}``, the partition's
  :data:`SLOW_JOBS_KEPT` jobs with the largest execution time.
* ``processed_samples``: event_id → 1, windowed (one-day tumbling windows by event time), to refuse a
  redelivered copy of a sample.

The last three (and the windows) are keyed by source partition and merged when read: see
docs/metrics.md for why, and for what a worker that holds only some partitions answers.
"""

from __future__ import annotations

from datetime import timedelta

from app.core.topic_specs import JOB_METRICS, spec_by_name
from app.worker.batching import coalescing_table
from app.worker.main import settings
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

#: Jobs kept per partition in ``slow_jobs`` (the most ``GET /api/metrics/slow`` can list).
SLOW_JOBS_KEPT = 100
PARTITIONS = spec_by_name(JOB_METRICS).partitions

job_metric_rollups = copartitioned_table(
    declare=fenced_table, name="job_metric_rollups", topic=JOB_METRICS,
    help="job_id -> rollup of the job's metrics samples",
)
metric_windows = copartitioned_table(
    declare=fenced_table, name="metric_windows", topic=JOB_METRICS,
    help="partition|window|scope|start|name -> rollup of one node's / cluster's window",
)
gpu_latest = copartitioned_table(
    declare=coalescing_table, name="gpu_latest", topic=JOB_METRICS,
    help="partition|node|gpu_id -> newest GPU sample",
)
slow_jobs = copartitioned_table(
    declare=fenced_table, name="slow_jobs", topic=JOB_METRICS,
    help="partition -> jobs with the largest execution time",
)
processed_samples = copartitioned_table(
    declare=coalescing_table, name="processed_samples", topic=JOB_METRICS, default=int, value_type=int,
    help="event_id -> 1 once a metrics sample was applied (windowed, expiring)",
).tumbling(timedelta(days=1), expires=timedelta(hours=settings.dedupe_window_hours))
