"""track_job_metrics and the anomaly side of track_job_lifecycle without a broker (agent
test contexts, memory store): rollups, windows, GPUs, slow jobs, dead letters, replays,
alerts."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import agents.job_metrics
from agents.job_lifecycle import track_job_lifecycle
from agents.job_metrics import track_job_metrics
from agents.runtime_anomaly import type_stats
from app.core.ids import derived_id
from app.core.metrics_math import WINDOWS, merge_rollups, summarize, window_key, window_start
from app.core.models import JobCompleted, JobMetricsSample, JobStatusChanged, JobSubmitted, MetricsSummary, ResourceRequest
from app.worker.main import app, codecs, settings
from app.worker.streams import DUPLICATES_DROPPED
from tables.job_metrics import gpu_latest, job_metric_rollups, metric_windows, slow_jobs
from tables.job_state import job_state
from tables.known_jobs import known_jobs

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def memory_app_patches(monkeypatch):
    """Samples of a job not known yet are dead-lettered at once (no grace period)."""
    monkeypatch.setattr(agents.job_metrics, "UNKNOWN_JOB_GRACE_S", 0.0)


def _base(name: str, *, at: datetime, user: str = "ann") -> dict:
    return dict(event_id=str(uuid.uuid4()), event_type=name, timestamp=at, correlation_id=str(uuid.uuid4()),
                user_id=user, schema_version=1)


def _submitted(job_id: str, *, job_type: str = "imaging", cluster: str = "frontera", user: str = "ann"):
    return JobSubmitted(**_base("JobSubmitted", at=T0, user=user), job_id=job_id, tacc_system=cluster,
                        resource_request=ResourceRequest(nodes=1, gpus=4, walltime="01:00:00"),
                        estimated_cost_usd=1.0, priority=1, job_type=job_type)


def _queued(job_id: str, *, user: str = "ann"):
    return JobStatusChanged(**_base("JobStatusChanged", at=T0 + timedelta(seconds=0.5), user=user), job_id=job_id,
                            previous_status="SUBMITTED", new_status="QUEUED")


def _running(job_id: str, *, user: str = "ann"):
    return JobStatusChanged(**_base("JobStatusChanged", at=T0 + timedelta(seconds=1), user=user), job_id=job_id,
                            previous_status="QUEUED", new_status="RUNNING")


def _completed(job_id: str, runtime: float, *, user: str = "ann"):
    return JobCompleted(**_base("JobCompleted", at=T0 + timedelta(seconds=runtime), user=user), job_id=job_id,
                        metrics_summary=MetricsSummary(execution_time_s=runtime, cpu_pct_mean=50.0,
                                                       gpu_pct_mean=50.0, memory_gb_max=10.0),
                        result_location="s3://x/")


def _sample(job_id: str, *, at: datetime, node: str = "c001", cpu: float = 50.0, gpu: float = 60.0,
            mem: float = 10.0, io: float = 100.0, elapsed: float = 30.0, gpu_id: int | None = 0):
    return JobMetricsSample(**_base("JobMetricsSample", at=at), job_id=job_id, node=node, cpu_pct=cpu, gpu_pct=gpu,
                            memory_gb=mem, io_mb_s=io, execution_time_s=elapsed, gpu_id=gpu_id)


def _lc(event) -> bytes:  # noqa: ANN001
    return codecs.for_topic("job-lifecycle").encode(event)


def _m(event) -> bytes:  # noqa: ANN001
    return codecs.for_topic("job-metrics").encode(event)


async def _start(lifecycle, job_id: str, *, partition: int | None = None, **submitted) -> None:  # noqa: ANN001, ANN003
    """Submit ``job_id`` and take it to RUNNING through the lifecycle agent."""
    user = submitted.get("user", "ann")
    for event in (_submitted(job_id, **submitted), _queued(job_id, user=user), _running(job_id, user=user)):
        await lifecycle.put(_lc(event), key=job_id.encode(), partition=partition)


async def _complete(lifecycle, job_id: str, runtime: float, *, partition: int | None = None,  # noqa: ANN001
                    **submitted) -> JobCompleted:  # noqa: ANN003
    """A whole lifecycle of ``job_id`` through the lifecycle agent: submitted … completed."""
    await _start(lifecycle, job_id, partition=partition, **submitted)
    completed = _completed(job_id, runtime, user=submitted.get("user", "ann"))
    await lifecycle.put(_lc(completed), key=job_id.encode(), partition=partition)
    return completed


ANOMALY_TITLES = ("had an unusual runtime", "is running much longer than usual")


def _anomaly_effects(emitted: list) -> list:
    """The anomaly side's effects among everything emitted: alerts, and its notifications
    (the lifecycle side's say completed, failed or retried)."""
    return [e for e in emitted if e.event_type == "SystemAlert"
            or (e.event_type == "NotificationSent" and e.title.endswith(ANOMALY_TITLES))]


def _window(partition: int, window: str, scope: str, name: str, at: datetime) -> dict:
    start = window_start(at_ms=int(at.timestamp() * 1000), size_ms=WINDOWS[window])
    return metric_windows[window_key(partition=partition, window=window, scope=scope, name=name, start_ms=start)]


async def test_samples_roll_up_per_job_window_gpu_and_slow_list(memory_app):
    async with track_job_lifecycle.test_context() as lifecycle:
        for job in ("j1", "j2"):
            await _start(lifecycle, job, cluster="frontera" if job == "j1" else "lonestar6")
    assert known_jobs["j1"]["status"] == "RUNNING" and known_jobs["j2"]["cluster"] == "lonestar6"
    assert job_state["j1"]["status"] == job_state["j2"]["status"] == "RUNNING"  # the lifecycle side too
    samples = [
        _sample("j1", at=T0 + timedelta(seconds=10), node="c001", cpu=10, gpu=20, mem=5, io=1, elapsed=10, gpu_id=0),
        _sample("j1", at=T0 + timedelta(seconds=70), node="c002", cpu=30, gpu=80, mem=7, io=3, elapsed=70, gpu_id=1),
        _sample("j2", at=T0 + timedelta(seconds=20), node="c001", cpu=90, gpu=40, mem=2, io=5, elapsed=500, gpu_id=0),
        _sample("j2", at=T0 + timedelta(seconds=15), node="c001", cpu=70, gpu=10, mem=4, io=7, elapsed=495, gpu_id=0),
    ]
    async with track_job_metrics.test_context() as agent:
        for s in samples:
            await agent.put(_m(s), key=s.job_id.encode(), partition=3)
    assert memory_app["dead"] == []
    j1 = job_metric_rollups["j1"]
    assert j1["count"] == 2 and j1["cpu_pct"] == {"sum": 40.0, "max": 30.0} and j1["execution_time_s"] == 70
    assert j1["nodes"] == ["c001", "c002"]
    # node c001, 1m window of T0: j1's first sample and both of j2's
    w = _window(3, "1m", "node", "c001", T0)
    assert w["count"] == 3 and w["cpu_pct"]["max"] == 90 and w["gpu_pct"]["sum"] == pytest.approx(70.0)
    assert _window(3, "1m", "node", "c002", T0 + timedelta(seconds=70))["count"] == 1
    day = summarize(merge_rollups([_window(3, "1d", "cluster", "frontera", T0)]))
    assert day["count"] == 2 and day["memory_gb"]["mean"] == pytest.approx(6.0)
    assert _window(3, "1h", "cluster", "lonestar6", T0)["io_mb_s"]["sum"] == 12
    # latest GPU value by event time: j2's sample at +20 s wins over its later-sent one at +15 s
    assert gpu_latest["3|c001|0"]["gpu_pct"] == 40 and gpu_latest["3|c001|0"]["job_id"] == "j2"
    assert gpu_latest["3|c002|1"]["gpu_pct"] == 80
    assert [(e["job_id"], e["execution_time_s"]) for e in slow_jobs["3"]["jobs"]] == [("j2", 500), ("j1", 70)]


async def test_bad_samples_are_dead_lettered_with_a_reason_and_touch_nothing(memory_app):
    async with track_job_lifecycle.test_context() as lifecycle:
        await _start(lifecycle, "j3")
    assert job_state["j3"]["status"] == known_jobs["j3"]["status"] == "RUNNING"
    good = _sample("j3", at=T0, cpu=40)
    bad = [
        _sample("j3", at=T0, cpu=-1.0),
        _sample("j3", at=T0, gpu=100.5),
        _sample("j3", at=T0, mem=math.nan),
        _sample("j3", at=T0, io=math.inf),
        _sample("nobody", at=T0),
    ]
    async with track_job_metrics.test_context() as agent:
        await agent.put(_m(good), key=b"j3", partition=1)
        before = {k: v for k, v in metric_windows.items()}
        for s in bad:
            await agent.put(_m(s), key=s.job_id.encode(), partition=1)
        dropped = DUPLICATES_DROPPED["job-metrics"]
        await agent.put(_m(good), key=b"j3", partition=1)  # redelivered copy, new offset: dropped
        assert DUPLICATES_DROPPED["job-metrics"] == dropped + 1
        await agent.put(b"\x00garbage", key=b"j3", partition=1)
        after = {k: v for k, v in metric_windows.items()}
    reasons = [reason for _, reason, _ in memory_app["dead"]]
    assert reasons == ["invalid-sample"] * 4 + ["unknown-job", "undecodable:unknown-schema-id"]
    assert after == before
    assert job_metric_rollups["j3"]["count"] == 1 and job_metric_rollups.get("nobody") is None


async def test_a_replayed_sample_is_not_counted_twice(memory_app):
    async with track_job_lifecycle.test_context() as lifecycle:
        await _start(lifecycle, "j4")
    assert job_state["j4"]["status"] == known_jobs["j4"]["status"] == "RUNNING"
    first, second = _sample("j4", at=T0, cpu=20), _sample("j4", at=T0 + timedelta(seconds=5), cpu=40)
    async with track_job_metrics.test_context() as agent:
        await agent.put(_m(first), key=b"j4", partition=2)
        offset = agent.sent_offset
        await agent.put(_m(second), key=b"j4", partition=2)
        agent.sent_offset = offset  # the worker restarted before committing: both come again
        await agent.put(_m(second), key=b"j4", partition=2)
    assert memory_app["dead"] == []
    assert job_metric_rollups["j4"]["count"] == 2
    assert _window(2, "1m", "node", "c001", T0)["cpu_pct"]["sum"] == 60.0


async def test_runtime_anomaly_alerts_owner_and_system_with_replay_stable_ids(memory_app):
    assert settings.anomaly_min_samples == 10
    jobs = [f"cal-{i}" for i in range(12)]
    async with track_job_lifecycle.test_context() as lifecycle:
        for i, job in enumerate(jobs):
            await _complete(lifecycle, job, 1000.0 + (i % 4) * 10, partition=i % 3, job_type="calibration")
        assert _anomaly_effects(memory_app["emitted"]) == []
        assert type_stats("calibration")["n"] == 12
        await _start(lifecycle, "slow-1", job_type="calibration", user="bob")
        outlier = _completed("slow-1", 4000.0, user="bob")
        offset = lifecycle.sent_offset
        await lifecycle.put(_lc(outlier), key=b"slow-1")
        dropped = DUPLICATES_DROPPED["job-lifecycle"]
        await lifecycle.put(_lc(outlier), key=b"slow-1")  # duplicate at a new offset: ignored
        assert DUPLICATES_DROPPED["job-lifecycle"] == dropped + 1  # the lifecycle side counts it, as before
        lifecycle.sent_offset = offset
        await lifecycle.put(_lc(outlier), key=b"slow-1")  # replay after a restart: same ids again
    effects = _anomaly_effects(memory_app["emitted"])
    alerts = [e for e in effects if e.event_type == "SystemAlert"]
    notes = [e for e in effects if e.event_type == "NotificationSent"]
    assert len(alerts) == 2 and len(notes) == 2
    assert {a.event_id for a in alerts} == {derived_id(outlier.event_id, "alert:runtime_anomaly")}
    assert {n.event_id for n in notes} == {derived_id(outlier.event_id, "notification:runtime_anomaly")}
    alert = alerts[0]
    assert alert.rule == "runtime_anomaly" and alert.job_id == "slow-1" and alert.state == "FIRING"
    assert alert.metrics["observed_s"] == 4000.0 and alert.metrics["samples"] == 12.0
    assert notes[0].user_id == "bob" and notes[0].job_id == "slow-1"
    assert type_stats("calibration")["n"] == 12  # a gross outlier stays out of the baseline
    assert memory_app["dead"] == []
    # the lifecycle side of the same events: every job completed and its owner notified (the
    # replay re-emits the outlier's notification with the same id), before the anomaly's
    assert all(job_state[job]["status"] == "COMPLETED" for job in [*jobs, "slow-1"])
    completions = [e for e in memory_app["emitted"] if e.event_type == "NotificationSent" and e.title.endswith("completed")]
    assert sorted(n.job_id for n in completions) == sorted([*jobs, "slow-1", "slow-1"])
    assert {n.event_id for n in completions if n.job_id == "slow-1"} == {derived_id(outlier.event_id, "notification")}
    emitted = memory_app["emitted"]
    assert emitted.index(next(n for n in completions if n.job_id == "slow-1")) < emitted.index(notes[0])


async def test_a_running_job_past_the_overrun_ratio_alerts_once(memory_app):
    assert settings.anomaly_min_samples == 10
    async with track_job_lifecycle.test_context() as lifecycle:
        for i in range(10):
            await _complete(lifecycle, f"img-{i}", 600.0 + i, job_type="imaging")
        await _start(lifecycle, "long-1", job_type="imaging", user="cy")
    assert job_state["long-1"]["status"] == known_jobs["long-1"]["status"] == "RUNNING"
    samples = [_sample("long-1", at=T0 + timedelta(seconds=s), elapsed=s) for s in (300, 950, 1000)]
    async with track_job_metrics.test_context() as agent:
        for s in samples:
            await agent.put(_m(s), key=b"long-1", partition=5)
    alerts = [e for e in memory_app["emitted"] if e.event_type == "SystemAlert"]
    notes = [e for e in _anomaly_effects(memory_app["emitted"]) if e.event_type == "NotificationSent"]
    assert [a.rule for a in alerts] == ["runtime_overrun"] and len(notes) == 1
    assert alerts[0].event_id == derived_id(samples[1].event_id, "alert:runtime_overrun")
    assert notes[0].user_id == "cy" and "longer than usual" in notes[0].title
    assert job_metric_rollups["long-1"]["overrun"]["event_id"] == samples[1].event_id
