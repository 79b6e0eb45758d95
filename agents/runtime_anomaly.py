"""Runtime anomalies: know every job, learn runtimes per job type, flag outliers.

No agent of its own: ``track_job_lifecycle`` (agents/job_lifecycle.py) runs
:func:`handle_lifecycle_event` on every decodable ``job-lifecycle`` event, in the same
delivery and batch as its own handling and whatever that decided. Per event:

* keeps ``known_jobs[job_id]`` (owner, type, cluster = ``tacc_system``, status, when it
  started running) — what the metrics side needs for the unknown-job check, the cluster
  windows and the overrun rule. It is a copy of what the lifecycle side just decided: read
  from the job's ``job_state`` value after that side handled the event (same key, same
  partition, same batch), so a job is known once its JobSubmitted was applied, and its
  status is the lifecycle's — not the status an event asked for (a late RUNNING after a
  swapped COMPLETED, a rejected or duplicate event). The entry is written only when one of
  its fields changes: an event that changed nothing the metrics side reads (a duplicate, a
  rejected or parked event) writes no changelog record;
* on a JobCompleted (the first of its job) that the lifecycle side accepted (applied, or
  parked until its turn), judges ``metrics_summary.execution_time_s``
  against the type's runtimes so far (:func:`app.core.anomaly.check_completed` on the merge of
  every partition's Welford state in ``runtime_stats``), then adds it to this partition's
  state (unless :func:`app.core.anomaly.learns` keeps a gross outlier out). An anomaly emits a
  ``SystemAlert`` (rule ``runtime_anomaly``) to ``system-health`` and a ``NotificationSent``
  to the job's owner on ``notifications``.

``overrun_effects`` is the ``runtime_overrun`` rule for running jobs; ``track_job_metrics``
calls it with each sample's ``execution_time_s`` (the elapsed running time).

Idempotency: emitted ids derive from the triggering event id (:func:`app.core.ids.derived_id`),
so a replay re-emits the same ids. Every write is fenced by the source offset (the job's
entry and the partition's state keep the offset that last changed them); a replayed event
re-asserts what it wrote (see agents/job_lifecycle.py for why) and re-emits its effects;
a second JobCompleted of a job is ignored (a job completes once). An event after the entry's
offset that changed nothing wrote nothing, and replaying it derives the same entry from the
same ``job_state`` again, so it writes nothing then either (as ``active_jobs`` in
agents/job_lifecycle.py).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Mapping

from app.core.anomaly import RUNTIME_OVERRUN, Anomaly, check_completed, check_overrun, learns
from app.core.ids import derived_id
from app.core.metrics_math import RUNTIME_BUCKETS, bucket_of, welford_add, welford_merge
from app.core.models import EventBase, JobCompleted, JobEvent, JobMetricsSample, NotificationSent, SystemAlert
from app.core.timeutil import from_epoch_ms, utc_ms
from app.core.topic_specs import JOB_LIFECYCLE, spec_by_name
from app.worker import streams
from app.worker.main import settings
from app.worker.streams import Origin
from tables.job_state import job_state
from tables.known_jobs import known_jobs
from tables.runtime_stats import runtime_stats

logger = logging.getLogger(__name__)

#: The ``component`` (Kafka key on system-health) of the detector's alerts.
ALERT_COMPONENT = "runtime-anomaly-detector"
LIFECYCLE_PARTITIONS = spec_by_name(JOB_LIFECYCLE).partitions
#: Alerts raised, by rule (for tests and health).
ALERTS: Counter[str] = Counter()


def stats_key(*, partition: int, job_type: str) -> str:
    return f"{partition}|{job_type}"


def type_stats(job_type: str) -> dict[str, Any]:
    """The merged Welford state (n, mean, m2) of ``job_type`` over every partition."""
    parts = [runtime_stats.get(stats_key(partition=p, job_type=job_type)) for p in range(LIFECYCLE_PARTITIONS)]
    return welford_merge(s for s in parts if s)


def alert_effects(
    *, anomaly: Anomaly, job_id: str, job_type: str, user_id: str | None, source_event_id: str,
    at_ms: int, correlation_id: str,
) -> list[EventBase]:
    """The SystemAlert and (with an owner) the NotificationSent of one finding."""
    message = anomaly.describe(job_id=job_id, job_type=job_type)
    alert_id = derived_id(source_event_id, f"alert:{anomaly.rule}")
    effects: list[EventBase] = [
        SystemAlert(
            event_id=alert_id, event_type="SystemAlert", timestamp=from_epoch_ms(ms=at_ms), correlation_id=correlation_id,
            user_id=user_id, schema_version=1, alert_id=alert_id, component=ALERT_COMPONENT, rule=anomaly.rule,
            severity="WARNING", state="FIRING", message=message, metrics=anomaly.metrics(), job_id=job_id,
        )
    ]
    if user_id:
        nid = derived_id(source_event_id, f"notification:{anomaly.rule}")
        title = (f"Job {job_id} is running much longer than usual" if anomaly.rule == RUNTIME_OVERRUN
                 else f"Job {job_id} had an unusual runtime")
        effects.append(NotificationSent(
            event_id=nid, event_type="NotificationSent", timestamp=from_epoch_ms(ms=at_ms), correlation_id=correlation_id,
            user_id=user_id, schema_version=1, notification_id=nid, channel="WEBSOCKET", severity="WARNING",
            title=title, body=message, job_id=job_id,
        ))
    return effects


def _anomaly_from(data: Mapping[str, Any]) -> Anomaly:
    return Anomaly(**data)


def _anomaly_data(anomaly: Anomaly) -> dict[str, Any]:
    return {"rule": anomaly.rule, "observed_s": anomaly.observed_s, "mean_s": anomaly.mean_s,
            "std_s": anomaly.std_s, "samples": anomaly.samples, "score": anomaly.score}


# -- overrun (called by track_job_metrics) ------------------------------------------------------
def overrun_of(*, sample: JobMetricsSample, known: Mapping[str, Any] | None) -> Anomaly | None:
    """The ``runtime_overrun`` finding of a running job's sample, if any."""
    if not known or known.get("status") != "RUNNING" or not known.get("job_type"):
        return None
    return check_overrun(stats=type_stats(known["job_type"]), elapsed_s=sample.execution_time_s,
                         min_samples=settings.anomaly_min_samples, ratio=settings.anomaly_overrun_ratio)


def overrun_effects(*, sample: JobMetricsSample, known: Mapping[str, Any], anomaly: Anomaly) -> list[EventBase]:
    return alert_effects(
        anomaly=anomaly, job_id=sample.job_id, job_type=known["job_type"], user_id=known.get("user_id"),
        source_event_id=sample.event_id, at_ms=utc_ms(sample.timestamp), correlation_id=sample.correlation_id,
    )


def overrun_data(anomaly: Anomaly) -> dict[str, Any]:
    return _anomaly_data(anomaly)


def anomaly_from_data(data: Mapping[str, Any]) -> Anomaly:
    return _anomaly_from(data)


# -- the lifecycle side -------------------------------------------------------------------------
def _entry_of(state: Mapping[str, Any], known: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``known_jobs`` entry of a job whose lifecycle value is ``state`` (without its offset)."""
    return {
        "user_id": state.get("user_id"), "job_type": state.get("job_type"), "cluster": state.get("tacc_system"),
        "status": state.get("status"), "running_since_ms": state.get("timestamps", {}).get("RUNNING"),
        "completed": (known or {}).get("completed"),
    }


def _unchanged(known: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> bool:
    return known is not None and all(known.get(field) == value for field, value in entry.items())


def _learn(*, partition: int, offset: int, job_type: str, runtime_s: float) -> None:
    key = stats_key(partition=partition, job_type=job_type)
    current = runtime_stats.get(key)
    if current is not None and current["offset"] >= offset:
        runtime_stats[key] = current  # replay: re-assert
        return
    state = welford_add(current, x=runtime_s)
    buckets = list((current or {}).get("buckets") or [0] * len(RUNTIME_BUCKETS))
    buckets[bucket_of(seconds=runtime_s)] += 1
    runtime_stats[key] = {
        **state, "offset": offset, "buckets": buckets,
        "min": runtime_s if current is None else min(current["min"], runtime_s),
        "max": runtime_s if current is None else max(current["max"], runtime_s),
    }


async def handle_lifecycle_event(event: EventBase, origin: Origin) -> None:
    """The anomaly side of one lifecycle event (see the module docstring)."""
    if not isinstance(event, JobEvent):
        return
    job_id, offset = event.job_id, origin.offset
    known = known_jobs.get(job_id)
    if known is not None and known.get("offset", -1) >= offset:
        known_jobs[job_id] = known  # replay: re-assert (see the module docstring)
        completed = known.get("completed") or {}
        if completed.get("offset") == offset:
            if completed.get("learned"):
                _learn(partition=origin.partition, offset=offset, job_type=known["job_type"],
                       runtime_s=completed["runtime_s"])
            if completed.get("anomaly"):
                await streams.emit(*alert_effects(
                    anomaly=_anomaly_from(completed["anomaly"]), job_id=job_id, job_type=known["job_type"],
                    user_id=known.get("user_id"), source_event_id=event.event_id, at_ms=utc_ms(event.timestamp),
                    correlation_id=event.correlation_id,
                ))
        return
    state = job_state.get(job_id)
    if state is None:
        return  # never submitted (or its JobSubmitted failed): not a known job
    entry = _entry_of(state, known)
    effects: list[EventBase] = []
    if isinstance(event, JobCompleted) and not entry["completed"] and event.event_id in state.get("event_ids", ()):
        runtime = event.metrics_summary.execution_time_s
        job_type = entry.get("job_type")
        completed: dict[str, Any] = {"event_id": event.event_id, "offset": offset, "runtime_s": runtime,
                                     "anomaly": None, "learned": False}
        if job_type and isinstance(runtime, (int, float)) and math.isfinite(runtime) and runtime >= 0:
            anomaly = check_completed(stats=type_stats(job_type), runtime_s=runtime,
                                      min_samples=settings.anomaly_min_samples, sigma=settings.anomaly_sigma)
            if learns(verdict=anomaly, sigma=settings.anomaly_sigma):
                _learn(partition=origin.partition, offset=offset, job_type=job_type, runtime_s=runtime)
                completed["learned"] = True
            if anomaly is not None:
                completed["anomaly"] = _anomaly_data(anomaly)
                ALERTS[anomaly.rule] += 1
                effects = alert_effects(
                    anomaly=anomaly, job_id=job_id, job_type=job_type, user_id=entry.get("user_id"),
                    source_event_id=event.event_id, at_ms=utc_ms(event.timestamp),
                    correlation_id=event.correlation_id,
                )
                logger.warning("runtime anomaly: %s", effects[0].message)  # type: ignore[attr-defined]
        entry["completed"] = completed
    if _unchanged(known, entry):
        return  # nothing the metrics side reads changed: no write, the offset stays at the last change
    entry["offset"] = offset
    known_jobs[job_id] = entry
    if effects:
        await streams.emit(*effects)
