"""Shared by the unit and reliability tests: one valid JSON example of every event type, and
an in-memory stand-in for the schema registry client (Confluent's id semantics)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

#: Fixed "now" of the validation tests.
NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
EVENT_ID = "5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11"

EXAMPLES: dict[str, dict[str, Any]] = {
    "JobSubmitted": {
        "event_type": "JobSubmitted", "job_id": "job-1", "user_id": "alice", "tacc_system": "frontera",
        "resource_request": {"nodes": 4, "gpus": 2, "walltime": "48:00:00"},
        "estimated_cost_usd": 12.5, "priority": 5, "job_type": "imaging",
    },
    "JobQueued": {"event_type": "JobQueued", "job_id": "job-1", "queue_name": "normal", "queue_position": 3},
    "JobStatusChanged": {
        "event_type": "JobStatusChanged", "job_id": "job-1", "previous_status": "QUEUED",
        "new_status": "RUNNING", "transition_reason": "scheduler started it",
    },
    "JobCompleted": {
        "event_type": "JobCompleted", "job_id": "job-1", "result_location": "s3://results/job-1",
        "metrics_summary": {"execution_time_s": 3600, "cpu_pct_mean": 87.5, "gpu_pct_mean": 40.0,
                            "memory_gb_max": 120.25},
    },
    "JobFailed": {
        "event_type": "JobFailed", "job_id": "job-1", "error_code": "OOM", "error_message": "out of memory",
        "retry_count": 1, "retriable": True, "stack_trace": "Traceback ...",
    },
    "JobCancelled": {"event_type": "JobCancelled", "job_id": "job-1", "cancelled_by": "alice", "reason": None},
    "JobMetricsSample": {
        "event_type": "JobMetricsSample", "job_id": "job-1", "node": "c001-001", "cpu_pct": 99.5,
        "gpu_pct": 10, "memory_gb": 64.0, "io_mb_s": 0, "execution_time_s": 12.25, "gpu_id": 0,
    },
    "NotificationSent": {
        "event_type": "NotificationSent", "user_id": "alice", "notification_id": "n-1",
        "channel": "EMAIL", "severity": "WARNING", "title": "Job failed", "body": "job-1 ran out of memory",
        "job_id": "job-1",
    },
    "NotificationRead": {
        "event_type": "NotificationRead", "user_id": "alice", "notification_id": "n-1",
        "channel": "WEBSOCKET", "severity": "INFO", "title": "t", "body": "",
    },
    "AuditRecord": {
        "event_type": "AuditRecord", "action": "job.cancel", "actor": "alice", "resource_type": "job",
        "resource_id": "job-1", "outcome": "SUCCESS", "before": '{"status": "RUNNING"}',
        "after": '{"status": "CANCELLED"}', "source_event_id": EVENT_ID,
    },
    "SystemHealthReport": {
        "event_type": "SystemHealthReport", "component": "job-lifecycle-agent", "status": "DEGRADED",
        "metrics": {"consumer_lag": 1500, "error_rate": 0.02}, "details": "lag above threshold",
    },
    "SystemAlert": {
        "event_type": "SystemAlert", "alert_id": "consumer_lag@worker-1", "component": "worker-1",
        "rule": "consumer_lag", "severity": "WARNING", "state": "FIRING",
        "message": "consumer lag 15000 above 10000", "metrics": {"consumer_lag": 15000.0}, "job_id": None,
    },
}


class MemoryRegistryClient:
    """Just the registry calls the codec makes, with Confluent's id semantics."""

    def __init__(self) -> None:
        self.by_id: dict[int, object] = {}
        self.subjects: dict[str, dict[str, int]] = {}
        self.calls = 0

    def register(self, subject, schema, schema_type="AVRO"):  # noqa: ANN001
        self.calls += 1
        text = str(schema)
        for sid, known in self.by_id.items():
            if str(known) == text:
                break
        else:
            sid = len(self.by_id) + 1
            self.by_id[sid] = schema
        self.subjects.setdefault(subject, {})[text] = sid
        return sid

    def check_version(self, subject, schema, schema_type="AVRO"):  # noqa: ANN001
        sid = self.subjects.get(subject, {}).get(str(schema))
        return None if sid is None else type("Found", (), {"schema_id": sid})()

    def get_by_id(self, schema_id):  # noqa: ANN001
        self.calls += 1
        return self.by_id.get(schema_id)
