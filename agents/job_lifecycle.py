"""``track_job_lifecycle``: apply each job-lifecycle event to the ``job_state`` table."""

from __future__ import annotations

import logging

from app.codecs import utc_ms
from app.main import app
from app.models import JobEvent
from app.topics import job_lifecycle_topic
from tables.job_state import job_state

logger = logging.getLogger(__name__)


def apply_event(*, state: dict | None, event: JobEvent) -> dict:
    """The job's new state after ``event`` (a pure function of the old state and the event)."""
    new = dict(state or {"job_id": event.job_id, "status": None, "events": 0})
    status = event.status_after()
    at = utc_ms(event.timestamp)
    new["status"] = status
    new["timestamps"] = {**new.get("timestamps", {}), status: at}
    new["updated_at"] = at
    new["last_event_id"] = event.event_id
    new["events"] = int(new.get("events", 0)) + 1
    if event.user_id:
        new["user_id"] = event.user_id
    new["correlation_id"] = event.correlation_id
    return new


# State-changing agent: concurrency 1, so Faust never commits past an in-flight event.
@app.agent(job_lifecycle_topic, concurrency=1)
async def track_job_lifecycle(events):
    async for event in events:
        try:
            job_state[event.job_id] = apply_event(state=job_state.get(event.job_id), event=event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the agent
            logger.exception("job-lifecycle event %s of job %s not applied", event.event_id, event.job_id)
        yield event.event_id
