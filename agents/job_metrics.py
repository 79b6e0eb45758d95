"""``track_job_metrics``: per-job rollups, event-time windows per node and cluster, the
latest utilisation of every GPU, and the slowest jobs, from ``job-metrics`` samples.

Per sample (all tables in :mod:`tables.job_metrics`; the design is in docs/metrics.md):

1. Check the values (:func:`app.core.metrics_math.sample_problem`: NaN/infinite, utilisation
   outside 0..100, negative memory/I/O/time) → dead letter ``invalid-sample``. Producers
   other than our ingest write to Kafka, so this guard does not trust app/core/validation.py.
2. The job must be in ``known_jobs`` (written from ``job-lifecycle`` by the anomaly side of
   ``track_job_lifecycle``) → else dead letter ``unknown-job``. As the two topics are
   consumed independently, a sample may overtake its job's JobSubmitted: the agent waits up
   to :data:`UNKNOWN_JOB_GRACE_S` once per job id before refusing.
3. Replay or duplicate: the job's rollup keeps the offset of the last sample applied; a
   sample at or below it is a replay after a restart (its writes are re-asserted, its alert
   re-emitted with the same ids). A sample whose event_id is in ``processed_samples`` at a
   new offset is a redelivered copy → dead letter ``duplicate`` (counted once).
4. Apply: the job's rollup; for each window (1m, 1h, 1d, by the sample's own timestamp)
   the node's and the cluster's (the job's ``tacc_system``) window rollup; the GPU's latest
   value (newer event time wins); the partition's slow-job list. Every aggregate keyed by
   partition keeps the offset that last changed it, so replays never add twice.
5. The ``runtime_overrun`` rule (agents/runtime_anomaly.py), once per job.
6. Windows past their retention (:data:`app.core.metrics_math.RETENTION`, relative to the
   partition's newest event time) are deleted when the partition enters a new minute.

Bad samples never touch a table: every check runs before the first write. Every decodable
sample is also copied to RabbitMQ's ``metrics`` exchange in the agent's batch, confirmed before
the batch is acked (``COSMIC_RABBITMQ_BRIDGE_ENABLED``, :mod:`app.worker.rabbit_bridge`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from typing import Any

from agents.runtime_anomaly import anomaly_from_data, overrun_data, overrun_effects, overrun_of
from app.core.errors import DuplicateEvent, RejectedEvent
from app.core.metrics_math import (
    METRICS, WINDOWS, add_sample, expired, parse_window_key, sample_problem, update_top, window_key, window_start,
)
from app.core.models import EventBase, JobMetricsSample
from app.core.timeutil import utc_ms
from app.core.topic_specs import JOB_METRICS
from app.worker import streams
from app.worker.main import app, settings
from app.worker.streams import Origin, process_events
from app.worker.topics import job_metrics_topic
from tables.job_metrics import (
    SLOW_JOBS_KEPT, gpu_latest, job_metric_rollups, metric_windows, processed_samples, slow_jobs,
)
from tables.known_jobs import known_jobs

logger = logging.getLogger(__name__)

#: Seconds a sample of a job not (yet) in known_jobs waits for it, once per job id.
UNKNOWN_JOB_GRACE_S = 2.0
_WAITED_FOR: OrderedDict[str, None] = OrderedDict()
_WAITED_MAX = 10_000
#: Samples by outcome: applied / replay / duplicate / invalid / unknown-job.
SAMPLE_OUTCOMES: Counter[str] = Counter()
#: Newest event time seen per partition, and the minute it was last pruned at.
_NEWEST_MS: dict[int, int] = {}
_PRUNED_MINUTE: dict[int, int] = {}


def _values(sample: JobMetricsSample) -> dict[str, Any]:
    return {name: getattr(sample, name) for name in METRICS + ("execution_time_s", "gpu_id")}


async def _known_job(job_id: str) -> dict[str, Any] | None:
    known = known_jobs.get(job_id)
    if known is not None or job_id in _WAITED_FOR:
        return known
    _WAITED_FOR[job_id] = None
    while len(_WAITED_FOR) > _WAITED_MAX:
        _WAITED_FOR.popitem(last=False)
    deadline = asyncio.get_running_loop().time() + UNKNOWN_JOB_GRACE_S
    while known is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        known = known_jobs.get(job_id)
    return known


def _window_keys(*, partition: int, sample: JobMetricsSample, cluster: str | None) -> list[str]:
    at = utc_ms(sample.timestamp)
    keys = []
    for window, size in WINDOWS.items():
        start = window_start(at_ms=at, size_ms=size)
        keys.append(window_key(partition=partition, window=window, scope="node", name=sample.node, start_ms=start))
        if cluster:
            keys.append(window_key(partition=partition, window=window, scope="cluster", name=cluster, start_ms=start))
    return keys


def _gpu_key(*, partition: int, sample: JobMetricsSample) -> str | None:
    return None if sample.gpu_id is None else f"{partition}|{sample.node}|{sample.gpu_id}"


def _reassert(*, partition: int, sample: JobMetricsSample, rollup: dict[str, Any], cluster: str | None) -> None:
    """A replayed sample: write back every value it touched, unchanged."""
    job_metric_rollups[sample.job_id] = rollup
    for key in _window_keys(partition=partition, sample=sample, cluster=cluster):
        value = metric_windows.get(key)
        if value is not None:
            metric_windows[key] = value
    gpu_key = _gpu_key(partition=partition, sample=sample)
    if gpu_key is not None and (value := gpu_latest.get(gpu_key)) is not None:
        gpu_latest[gpu_key] = value
    if (value := slow_jobs.get(str(partition))) is not None:
        slow_jobs[str(partition)] = value


async def handle_sample(event: EventBase, origin: Origin) -> None:
    if not isinstance(event, JobMetricsSample):
        raise RejectedEvent(f"{event.event_type} does not belong on job-metrics", reason="wrong-event-type")
    sample, partition, offset = event, origin.partition, origin.offset
    problem = sample_problem(values=_values(sample))
    if problem is not None:
        SAMPLE_OUTCOMES["invalid"] += 1
        field, reason = problem
        raise RejectedEvent(f"{field}: {reason}", reason="invalid-sample")
    if not sample.node.strip():
        SAMPLE_OUTCOMES["invalid"] += 1
        raise RejectedEvent("node: must be a non-empty string", reason="invalid-sample")
    known = await _known_job(sample.job_id)
    if known is None:
        SAMPLE_OUTCOMES["unknown-job"] += 1
        raise RejectedEvent(f"job {sample.job_id} is not known (no JobSubmitted seen)", reason="unknown-job")
    cluster = known.get("cluster")
    rollup = job_metric_rollups.get(sample.job_id)
    if rollup is not None and rollup["offset"] >= offset:
        SAMPLE_OUTCOMES["replay"] += 1
        _reassert(partition=partition, sample=sample, rollup=rollup, cluster=cluster)
        overrun = rollup.get("overrun")
        if overrun and overrun["offset"] == offset:
            await streams.emit(*overrun_effects(sample=sample, known=known,
                                                anomaly=anomaly_from_data(overrun["anomaly"])))
        return
    if processed_samples[sample.event_id].current():
        SAMPLE_OUTCOMES["duplicate"] += 1
        raise DuplicateEvent(f"sample {sample.event_id} was already applied")

    at = utc_ms(sample.timestamp)
    values = _values(sample)
    new_rollup = {
        **add_sample(rollup, values=values),
        "offset": offset,
        "first_ms": at if rollup is None else min(rollup["first_ms"], at),
        "last_ms": at if rollup is None else max(rollup["last_ms"], at),
        "execution_time_s": sample.execution_time_s if rollup is None
        else max(rollup["execution_time_s"], sample.execution_time_s),
        "nodes": sorted(set((rollup or {}).get("nodes", [])) | {sample.node}),
        "overrun": (rollup or {}).get("overrun"),
    }
    effects: list[EventBase] = []
    if new_rollup["overrun"] is None:
        anomaly = overrun_of(sample=sample, known=known)
        if anomaly is not None:
            new_rollup["overrun"] = {"offset": offset, "event_id": sample.event_id, "anomaly": overrun_data(anomaly)}
            effects = overrun_effects(sample=sample, known=known, anomaly=anomaly)
    job_metric_rollups[sample.job_id] = new_rollup

    for key in _window_keys(partition=partition, sample=sample, cluster=cluster):
        current = metric_windows.get(key)
        if current is not None and current["offset"] >= offset:
            continue
        metric_windows[key] = {**add_sample(current, values=values), "offset": offset}

    gpu_key = _gpu_key(partition=partition, sample=sample)
    if gpu_key is not None:
        current = gpu_latest.get(gpu_key)
        if current is None or (current["at_ms"], current["offset"]) < (at, offset):
            gpu_latest[gpu_key] = {"node": sample.node, "gpu_id": sample.gpu_id, "gpu_pct": sample.gpu_pct,
                                   "job_id": sample.job_id, "at_ms": at, "offset": offset}

    slow = slow_jobs.get(str(partition)) or {"offset": -1, "jobs": []}
    if slow["offset"] < offset:
        entry = {"job_id": sample.job_id, "execution_time_s": new_rollup["execution_time_s"],
                 "job_type": known.get("job_type"), "cluster": cluster, "user_id": known.get("user_id")}
        slow_jobs[str(partition)] = {"offset": offset,
                                     "jobs": update_top(slow["jobs"], entry=entry, k=SLOW_JOBS_KEPT)}

    processed_samples[sample.event_id] = 1
    SAMPLE_OUTCOMES["applied"] += 1
    _prune(partition=partition, at_ms=at)
    if effects:
        await streams.emit(*effects)


def _prune(*, partition: int, at_ms: int) -> None:
    """Delete this partition's windows past retention, at most once per event-time minute."""
    newest = max(_NEWEST_MS.get(partition, at_ms), at_ms)
    _NEWEST_MS[partition] = newest
    minute = newest // 60_000
    if _PRUNED_MINUTE.get(partition) == minute:
        return
    _PRUNED_MINUTE[partition] = minute
    prefix = f"{partition}|"
    doomed = []
    for key in list(metric_windows.keys()):
        if not key.startswith(prefix):
            continue
        _, window, _, start, _ = parse_window_key(key)
        if expired(window=window, start_ms=start, newest_ms=newest):
            doomed.append(key)
    for key in doomed:
        del metric_windows[key]
    if doomed:
        logger.info("job metrics: pruned %d expired windows of partition %d", len(doomed), partition)


# State-changing agent: concurrency 1. This agent owns job-metrics' dead letters (the RabbitMQ
# bridge's metrics agent skips undecodable records), so each bad record is dead-lettered once.
@app.agent(job_metrics_topic, concurrency=1)
async def track_job_metrics(stream):
    async for result in process_events(stream, topic=JOB_METRICS, handler=handle_sample,
                                       copy_to_rabbitmq=settings.rabbitmq_bridge_enabled):
        yield result
