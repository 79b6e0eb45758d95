"""``known_jobs``: job_id → what the metrics side needs to know of a job (a GlobalTable).

Written from ``job-lifecycle`` (10 partitions, key job_id) by ``track_job_lifecycle``'s
anomaly side (:func:`agents.runtime_anomaly.handle_lifecycle_event`):
``{"user_id", "job_type", "cluster", "status", "running_since_ms", "offset", "completed"}``
where ``cluster`` is the job's ``tacc_system`` and ``completed`` records the JobCompleted
that was judged (event id, offset, runtime, the anomaly found). Global, because it is read
while handling ``job-metrics`` events (20 partitions, not co-partitioned): every worker
holds every job. Also the owner check of ``GET /api/metrics/jobs/{job_id}``.
"""

from __future__ import annotations

from app.core.topic_specs import JOB_LIFECYCLE, spec_by_name
from app.worker.main import app
from app.worker.table_fencing import fenced_global_table

known_jobs = fenced_global_table(
    app,
    "known_jobs", default=None, key_type=str, partitions=spec_by_name(JOB_LIFECYCLE).partitions,
    help="job_id -> owner, type, cluster, status of a job (global)",
)
