"""A small demo event source: random jobs walking through their lifecycle on ``job-lifecycle``."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from app.errors import CosmicError
from app.models import (
    JobCancelled,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobQueued,
    JobStatusChanged,
    JobSubmitted,
    MetricsSummary,
    ResourceRequest,
    utc_now,
)
from app.settings import Settings

SYSTEMS = ("frontera", "stampede3", "lonestar6")
JOB_TYPES = ("calibration", "imaging")


def lifecycle_events(
    *, job_id: str, user_id: str, rng: random.Random, start: datetime | None = None,
    outcome: str | None = None,
) -> list[JobEvent]:
    """A complete, valid lifecycle of one job: submitted, queued, running, then an outcome —
    COMPLETED, FAILED, CANCELLED, or RETRIED (a retriable failure, re-queued, then completed).
    Event times are 1 ms apart from ``start``."""
    t = start or utc_now()
    corr = str(uuid.uuid4())
    outcome = outcome or rng.choice(("COMPLETED", "COMPLETED", "FAILED", "CANCELLED"))
    step = 0

    def base(name: str) -> dict:
        nonlocal step
        moment = t + timedelta(milliseconds=step)
        step += 1
        return dict(
            event_id=str(uuid.uuid4()), event_type=name, timestamp=moment,
            correlation_id=corr, user_id=user_id, schema_version=1, job_id=job_id,
        )

    def queued() -> JobQueued:
        return JobQueued(**base("JobQueued"), queue_name="normal", queue_position=rng.randint(0, 50))

    def running() -> JobStatusChanged:
        return JobStatusChanged(**base("JobStatusChanged"), previous_status="QUEUED", new_status="RUNNING",
                                transition_reason="scheduler started the job")

    events: list[JobEvent] = [
        JobSubmitted(
            **base("JobSubmitted"), tacc_system=rng.choice(SYSTEMS),
            resource_request=ResourceRequest(nodes=rng.randint(1, 8), gpus=rng.choice((0, 4, 8)), walltime="02:00:00"),
            estimated_cost_usd=round(rng.uniform(1, 500), 2), priority=rng.randint(0, 10),
            job_type=rng.choice(JOB_TYPES),
        ),
        queued(),
        running(),
    ]
    if outcome == "RETRIED":
        events += [
            JobFailed(**base("JobFailed"), error_code="NODE_LOST", error_message="node lost", retry_count=0,
                      retriable=True),
            queued(),
            running(),
        ]
    if outcome in ("COMPLETED", "RETRIED"):
        events.append(
            JobCompleted(
                **base("JobCompleted"),
                metrics_summary=MetricsSummary(
                    execution_time_s=round(rng.uniform(60, 7200), 1), cpu_pct_mean=round(rng.uniform(10, 100), 1),
                    gpu_pct_mean=round(rng.uniform(0, 100), 1), memory_gb_max=round(rng.uniform(1, 512), 1),
                ),
                result_location=f"s3://cosmic-results/{job_id}/",
            )
        )
    elif outcome == "FAILED":
        events.append(
            JobFailed(**base("JobFailed"), error_code="OOM", error_message="node ran out of memory",
                      retry_count=0, retriable=False)
        )
    elif outcome == "CANCELLED":
        events.append(JobCancelled(**base("JobCancelled"), cancelled_by=user_id, reason="no longer needed"))
    else:
        raise ValueError(f"unknown outcome {outcome!r}")
    return events


class DemoIngestError(CosmicError):
    """The worker refused a demo event (``POST /api/events`` did not answer 202)."""


class _HttpIngest:
    """Publishes through a worker's ``POST /api/events`` with a bearer token, as the platform's
    API does."""

    def __init__(self, *, url: str, token: str) -> None:
        self._url = url
        self._token = token
        self._session: Any = None

    async def __aenter__(self) -> "_HttpIngest":
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def publish(self, event: JobEvent) -> None:
        import aiohttp

        from app.validation import event_to_json

        try:
            async with self._session.post(self._url, json=event_to_json(event),
                                          headers={"Authorization": f"Bearer {self._token}"}) as response:
                if response.status != 202:
                    raise DemoIngestError(f"POST {self._url} answered {response.status}: "
                                          f"{(await response.text())[:300]}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DemoIngestError(f"POST {self._url} failed: {exc!r} (is the worker running?)") from exc


async def run_demo(
    *, settings: Settings, jobs: int | None, interval: float, seed: int | None = None,
    published: list[str] | None = None, ingest_url: str | None = None, token: str | None = None,
) -> int:
    """Publish ``jobs`` job lifecycles (forever when None), one event every ``interval`` s;
    the ids of finished jobs are appended to ``published``. With ``ingest_url`` the events go
    through that worker's ``POST /api/events`` with ``token`` (a publisher's JWT); else straight
    to Kafka with the Python publisher."""
    from app.publisher import EventPublisher

    rng = random.Random(seed)
    sent = 0
    if ingest_url is not None:
        if not token:
            raise DemoIngestError("publishing through POST /api/events needs a publisher token")
        sink: Any = _HttpIngest(url=ingest_url, token=token)
    else:
        sink = EventPublisher(settings=settings)
    async with sink as publisher:
        n = 0
        while jobs is None or n < jobs:
            n += 1
            job_id = f"demo-job-{uuid.uuid4().hex[:8]}"
            for event in lifecycle_events(job_id=job_id, user_id=f"user-{rng.randint(1, 5)}", rng=rng):
                await publisher.publish(event)
                sent += 1
                await asyncio.sleep(interval)
            if published is not None:
                published.append(job_id)
            print(f"demo: job {job_id} published ({sent} events so far)", flush=True)
    return sent
