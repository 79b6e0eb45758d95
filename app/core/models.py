"""Event records of the service, one ``faust.Record`` per Avro record in ``avro/*.avsc``.

Each event class's Faust namespace is its Avro full name (``cosmic_horizons.events.X``),
which is how the Avro codec (:mod:`app.core.codecs`) maps a union branch to a class and back.
Several event types share one topic: the topic's value schema is the Avro union of its
event records (see ``docs/events.md``). ``tests/unit/test_models_match_avro.py`` fails when
a record here and its schema disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Dict, Optional

import faust

from app.core.topic_specs import AUDIT_TRAIL, JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS, SYSTEM_HEALTH

NAMESPACE = "cosmic_horizons.events"

JOB_STATUSES = ("SUBMITTED", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def _ns(name: str) -> str:
    return f"{NAMESPACE}.{name}"


class EventBase(faust.Record, abstract=True, serializer=None):
    """Fields every event carries (seed 002's EventBase)."""

    event_id: str  # uuid
    event_type: str  # the record's name
    timestamp: datetime  # timestamp-millis, UTC
    correlation_id: str
    user_id: Optional[str]
    schema_version: int


# -- job lifecycle (topic job-lifecycle, key job_id) ---------------------------------------
class ResourceRequest(faust.Record, namespace=_ns("ResourceRequest"), serializer=None):
    nodes: int
    gpus: int
    walltime: str  # HH:MM:SS


class MetricsSummary(faust.Record, namespace=_ns("MetricsSummary"), serializer=None):
    execution_time_s: float
    cpu_pct_mean: float
    gpu_pct_mean: float
    memory_gb_max: float


class JobEvent(EventBase, abstract=True):
    """A job-lifecycle event; ``job_id`` is its Kafka key."""

    job_id: str

    def status_after(self) -> str:
        """The job's status once this event is applied."""
        return STATUS_AFTER[self.event_type] if self.event_type in STATUS_AFTER else self.new_status  # type: ignore[attr-defined]


class JobSubmitted(JobEvent, namespace=_ns("JobSubmitted")):
    tacc_system: str
    resource_request: ResourceRequest
    estimated_cost_usd: float
    priority: int
    job_type: str


class JobQueued(JobEvent, namespace=_ns("JobQueued")):
    queue_name: str
    queue_position: Optional[int] = None


class JobStatusChanged(JobEvent, namespace=_ns("JobStatusChanged")):
    previous_status: str  # JobStatus
    new_status: str  # JobStatus
    transition_reason: Optional[str] = None


class JobCompleted(JobEvent, namespace=_ns("JobCompleted")):
    metrics_summary: MetricsSummary
    result_location: str


class JobFailed(JobEvent, namespace=_ns("JobFailed")):
    error_code: str
    error_message: str
    retry_count: int
    retriable: bool
    stack_trace: Optional[str] = None


class JobCancelled(JobEvent, namespace=_ns("JobCancelled")):
    cancelled_by: str
    reason: Optional[str] = None


STATUS_AFTER = {
    "JobSubmitted": "SUBMITTED",
    "JobQueued": "QUEUED",
    "JobCompleted": "COMPLETED",
    "JobFailed": "FAILED",
    "JobCancelled": "CANCELLED",
}


# -- job metrics (topic job-metrics, key job_id) -------------------------------------------
class JobMetricsSample(EventBase, namespace=_ns("JobMetricsSample")):
    job_id: str
    node: str
    cpu_pct: float
    gpu_pct: float
    memory_gb: float
    io_mb_s: float
    execution_time_s: float
    gpu_id: Optional[int] = None


# -- notifications (topic notifications, key user_id) --------------------------------------
class NotificationEvent(EventBase, abstract=True):
    notification_id: str
    channel: str  # NotificationChannel
    severity: str  # Severity
    title: str
    body: str
    job_id: Optional[str] = None


class NotificationSent(NotificationEvent, namespace=_ns("NotificationSent")):
    pass


class NotificationRead(NotificationEvent, namespace=_ns("NotificationRead")):
    pass


# -- audit trail (topic audit-trail, key resource_id) --------------------------------------
class AuditRecord(EventBase, namespace=_ns("AuditRecord")):
    action: str
    actor: str
    resource_type: str
    resource_id: str
    outcome: str  # AuditOutcome
    before: Optional[str] = None  # JSON
    after: Optional[str] = None  # JSON
    source_event_id: Optional[str] = None


# -- system health (topic system-health, key component) ------------------------------------
class SystemHealthReport(EventBase, namespace=_ns("SystemHealthReport")):
    component: str
    status: str  # HealthStatus
    metrics: Dict[str, float]
    details: Optional[str] = None


class SystemAlert(EventBase, namespace=_ns("SystemAlert")):
    alert_id: str
    component: str
    rule: str
    severity: str  # AlertSeverity: INFO, WARNING, CRITICAL
    state: str  # AlertState: FIRING, RESOLVED
    message: str
    metrics: Dict[str, float]
    job_id: Optional[str] = None


#: Topic (without prefix) → the event classes it carries, in the order of its .avsc union.
TOPIC_EVENTS: dict[str, tuple[type[EventBase], ...]] = {
    JOB_LIFECYCLE: (JobSubmitted, JobQueued, JobStatusChanged, JobCompleted, JobFailed, JobCancelled),
    JOB_METRICS: (JobMetricsSample,),
    NOTIFICATIONS: (NotificationSent, NotificationRead),
    AUDIT_TRAIL: (AuditRecord,),
    SYSTEM_HEALTH: (SystemHealthReport, SystemAlert),
}

#: Topic (without prefix) → its schema file in avro/.
TOPIC_SCHEMA_FILES: dict[str, str] = {
    JOB_LIFECYCLE: "job_lifecycle.avsc",
    JOB_METRICS: "job_metrics.avsc",
    NOTIFICATIONS: "notifications.avsc",
    AUDIT_TRAIL: "audit_trail.avsc",
    SYSTEM_HEALTH: "system_health.avsc",
}

EVENT_CLASSES: dict[str, type[EventBase]] = {
    cls.__name__: cls for classes in TOPIC_EVENTS.values() for cls in classes
}
