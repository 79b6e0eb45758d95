"""A small demo event source: random jobs walking through their lifecycle on ``job-lifecycle``."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from app.core.errors import CosmicError
from app.core.models import (
    EventBase,
    JobCancelled,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobMetricsSample,
    JobQueued,
    JobStatusChanged,
    JobSubmitted,
    MetricsSummary,
    ResourceRequest,
)
from app.core.settings import Settings
from app.core.timeutil import utc_now

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

    async def publish(self, event: EventBase) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: list[EventBase]) -> None:
        import aiohttp

        from app.core.validation import event_to_json

        try:
            async with self._session.post(self._url, json=[event_to_json(e) for e in events],
                                          headers={"Authorization": f"Bearer {self._token}"}) as response:
                if response.status != 202:
                    raise DemoIngestError(f"POST {self._url} answered {response.status}: "
                                          f"{(await response.text())[:300]}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DemoIngestError(f"POST {self._url} failed: {exc!r} (is the worker running?)") from exc


#: Typical runtime (s) of each demo job type; a demo runtime anomaly is far beyond it.
TYPICAL_RUNTIME_S = {"calibration": 1800.0, "imaging": 5400.0}
#: GPU nodes of each system that demo jobs run on (a small pool: a readable heatmap).
NODES_PER_SYSTEM = 3
GPUS_PER_NODE = 4
#: Rounds of metrics samples a running demo job publishes, and the seconds between them.
SAMPLE_ROUNDS = 3
SAMPLE_EVERY_S = 2.0


def with_runtime(event: JobCompleted, *, seconds: float) -> JobCompleted:
    """``event`` with its ``metrics_summary.execution_time_s`` set to ``seconds``."""
    summary = event.metrics_summary
    return event.derive(metrics_summary=MetricsSummary(
        execution_time_s=round(seconds, 1), cpu_pct_mean=summary.cpu_pct_mean, gpu_pct_mean=summary.gpu_pct_mean,
        memory_gb_max=summary.memory_gb_max))


def metrics_samples(*, job: JobSubmitted, rng: random.Random, at: datetime, elapsed_s: float) -> list[JobMetricsSample]:
    """One round of a running job's samples: per node it runs on (up to 2), one sample per GPU
    (GPU utilisation, CPU, memory, I/O), or one without a GPU for a CPU-only job."""
    request = job.resource_request
    first = rng.randrange(NODES_PER_SYSTEM)
    nodes = [f"{job.tacc_system}-gpu{(first + i) % NODES_PER_SYSTEM + 1:02d}" for i in range(min(request.nodes, 2))]
    gpus: list[int | None] = list(range(min(request.gpus, GPUS_PER_NODE))) or [None]
    return [
        JobMetricsSample(
            event_id=str(uuid.uuid4()), event_type="JobMetricsSample", timestamp=at, correlation_id=str(uuid.uuid4()),
            user_id=job.user_id, schema_version=1, job_id=job.job_id, node=node,
            cpu_pct=round(rng.uniform(20, 95), 1), gpu_pct=0.0 if gpu is None else round(rng.uniform(35, 100), 1),
            memory_gb=round(rng.uniform(8, 240), 1), io_mb_s=round(rng.uniform(1, 400), 1),
            execution_time_s=round(elapsed_s, 1), gpu_id=gpu,
        )
        for node in nodes for gpu in gpus
    ]


def history(*, rng: random.Random, jobs_per_type: int, now: datetime) -> list[JobEvent]:
    """Completed lifecycles of ``jobs_per_type`` jobs of each type, stamped over the minutes
    before ``now``, with runtimes near the type's typical one: what anomaly detection learns
    from before it judges a job (COSMIC_ANOMALY_MIN_SAMPLES)."""
    events: list[JobEvent] = []
    start = now - timedelta(minutes=10)
    for job_type, typical in TYPICAL_RUNTIME_S.items():
        for i in range(jobs_per_type):
            job_id = f"demo-history-{uuid.uuid4().hex[:8]}"
            lifecycle = lifecycle_events(job_id=job_id, user_id=f"user-{rng.randint(1, 5)}", rng=rng,
                                         start=start + timedelta(seconds=len(events)), outcome="COMPLETED")
            lifecycle[0] = lifecycle[0].derive(job_type=job_type)
            lifecycle[-1] = with_runtime(lifecycle[-1], seconds=rng.gauss(typical, typical * 0.05))
            events += lifecycle
    return events


async def run_demo(
    *, settings: Settings, jobs: int | None, interval: float, seed: int | None = None,
    published: list[str] | None = None, ingest_url: str | None = None, token: str | None = None,
    showcase: bool | None = None, sink: Any = None,
) -> int:
    """Publish ``jobs`` job lifecycles (forever when None), one event every ``interval`` s;
    the ids of finished jobs are appended to ``published``. Running jobs publish
    ``SAMPLE_ROUNDS`` rounds of metrics samples ``SAMPLE_EVERY_S`` apart. With ``ingest_url``
    the events go through that worker's ``POST /api/events`` with ``token`` (a publisher's
    JWT); else straight to Kafka with the Python publisher.

    Run forever (``jobs`` None, as ``cosmic run`` does; or with ``showcase``), the demo also fills the views that need
    history or trouble: it first publishes a runtime history (:func:`history`), then every
    fourth job completes far beyond its type's typical runtime (a runtime anomaly: a
    ``SystemAlert`` and a notification), the third fails (recent failures), and every tenth
    job gets a cancellation after it finished (an invalid transition: a dead letter, and the
    ``dlq_growth`` system alert) — the first of each within the first minute."""
    from app.worker.publisher import EventPublisher

    rng = random.Random(seed)
    sent = 0
    showcase = jobs is None if showcase is None else showcase
    if sink is not None:  # anything with publish / publish_many (tests)
        pass
    elif ingest_url is not None:
        if not token:
            raise DemoIngestError("publishing through POST /api/events needs a publisher token")
        sink = _HttpIngest(url=ingest_url, token=token)
    else:
        sink = EventPublisher(settings=settings)
    async with sink as publisher:
        if showcase:
            past = history(rng=rng, jobs_per_type=settings.anomaly_min_samples + 2, now=utc_now())
            await publisher.publish_many(past)
            sent += len(past)
            print(f"demo: published the runtime history of {len(past) // 4} completed jobs", flush=True)
        n = 0
        while jobs is None or n < jobs:
            n += 1
            job_id = f"demo-job-{uuid.uuid4().hex[:8]}"
            outcome = ("COMPLETED" if n % 4 == 2 else "FAILED" if n == 3 else None) if showcase else None
            submitted: JobSubmitted | None = None
            for event in lifecycle_events(job_id=job_id, user_id=f"user-{rng.randint(1, 5)}", rng=rng,
                                          outcome=outcome):
                if isinstance(event, JobSubmitted):
                    if showcase and n == 1 and event.resource_request.gpus == 0:  # the heatmap from the start
                        request = event.resource_request
                        event = event.derive(resource_request=ResourceRequest(
                            nodes=request.nodes, gpus=GPUS_PER_NODE, walltime=request.walltime))
                    submitted = event
                if isinstance(event, JobCompleted) and showcase and submitted is not None:
                    typical = TYPICAL_RUNTIME_S.get(submitted.job_type, 1800.0)
                    anomaly = n % 4 == 2
                    event = with_runtime(event, seconds=typical * 8 if anomaly else rng.gauss(typical, typical * 0.02))
                event = event.derive(timestamp=utc_now())  # stamped when it is published
                await publisher.publish(event)
                sent += 1
                await asyncio.sleep(interval)
                if (isinstance(event, JobStatusChanged) and event.new_status == "RUNNING"
                        and submitted is not None):
                    started = utc_now()
                    for _ in range(SAMPLE_ROUNDS):
                        await asyncio.sleep(SAMPLE_EVERY_S)
                        now = utc_now()
                        samples = metrics_samples(job=submitted, rng=rng, at=now,
                                                  elapsed_s=(now - started).total_seconds())
                        await publisher.publish_many(samples)
                        sent += len(samples)
            if showcase and n % 10 == 1:
                stray = JobCancelled(
                    event_id=str(uuid.uuid4()), event_type="JobCancelled", timestamp=utc_now(),
                    correlation_id=str(uuid.uuid4()), user_id=submitted.user_id if submitted else None,
                    schema_version=1, job_id=job_id, cancelled_by="demo", reason="cancelled after it finished")
                await publisher.publish(stray)
                sent += 1
                print(f"demo: job {job_id} cancelled after it finished (dead-lettered: the DLQ and its alert)",
                      flush=True)
            if published is not None:
                published.append(job_id)
            print(f"demo: job {job_id} published ({sent} events so far)", flush=True)
    return sent
