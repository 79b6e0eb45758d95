"""Event records of the service. Every record here matches an ``.avsc`` in ``avro/``."""

from __future__ import annotations

import faust

#: Status a job is in after an event of each type.
STATUS_AFTER_EVENT = {
    "JobSubmitted": "SUBMITTED",
    "JobQueued": "QUEUED",
    "JobCompleted": "COMPLETED",
    "JobFailed": "FAILED",
    "JobCancelled": "CANCELLED",
}


class JobLifecycleEvent(faust.Record, serializer="json"):
    """One event of a job's lifecycle, keyed by ``job_id`` on ``job-lifecycle``."""

    event_id: str
    event_type: str
    job_id: str
    timestamp: int  # epoch milliseconds
    user_id: str = ""
    correlation_id: str = ""
    new_status: str = ""  # JobStatusChanged only

    def status_after(self) -> str | None:
        """The job's status once this event is applied (None if the event does not set one)."""
        if self.event_type == "JobStatusChanged":
            return self.new_status or None
        return STATUS_AFTER_EVENT.get(self.event_type)
