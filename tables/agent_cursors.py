"""``cursor_<topic>``: agent name → {"offset"} — the last offset of this partition of
``<topic>`` the agent handled (one table per source topic, co-partitioned with it).

Why: Faust has been seen to commit a consumer offset past records an agent never handled
(after repeated SIGKILLs, a run of about twenty records per partition was committed and
never processed: ``tests/reliability/test_worker_crash_cycles.py``). With the cursor,
:func:`app.worker.streams.process_events` notices a jump in offsets and reads the records in
between from Kafka before going on (:mod:`app.worker.offset_gaps`). Offset-fenced like the other
tables, so recovery never moves a cursor back.

Each agent reads and writes only its own key, and nothing else (health, readiness, web
views) reads these tables: the key of an agent that no longer runs (``cursor_job_lifecycle``
keeps ``detect_runtime_anomalies``, whose work ``track_job_lifecycle`` does now) is never
read again and stays as it was, harmless.
"""

from __future__ import annotations

from app.core.topic_specs import AUDIT_TRAIL, JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS, SYSTEM_HEALTH, spec_by_name
from app.worker.main import app
from app.worker.table_fencing import fenced_table

CURSOR_TOPICS = (JOB_LIFECYCLE, AUDIT_TRAIL, NOTIFICATIONS, JOB_METRICS, SYSTEM_HEALTH)


def cursor_table_name(topic: str) -> str:
    return "cursor_" + topic.replace("-", "_")


cursors = {
    topic: fenced_table(
        app,
        cursor_table_name(topic),
        default=None,
        key_type=str,
        partitions=spec_by_name(topic).partitions,
        help=f"agent -> last {topic} offset it handled on this partition",
    )
    for topic in CURSOR_TOPICS
}
