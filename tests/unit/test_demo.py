"""The demo source: valid events only (but the one stray it means), metrics samples of running
jobs, a runtime history, runtime anomalies and a dead letter in showcase mode."""

from __future__ import annotations

import asyncio
import random

import pytest

import app.ops.demo as demo
from app.core.models import JobCancelled, JobCompleted, JobFailed, JobMetricsSample, JobStatusChanged, JobSubmitted
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.core.validation import EventTimeBounds, event_to_json, parse_event
from app.ops.demo import TYPICAL_RUNTIME_S, history, run_demo


class Sink:
    def __init__(self) -> None:
        self.events: list = []

    async def __aenter__(self) -> "Sink":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def publish(self, event) -> None:  # noqa: ANN001
        self.events.append(event)

    async def publish_many(self, events) -> None:  # noqa: ANN001
        self.events.extend(events)


def _run(*, jobs: int, showcase: bool) -> list:
    sink = Sink()
    asyncio.run(run_demo(settings=Settings(), jobs=jobs, interval=0, seed=4, showcase=showcase, sink=sink))
    return sink.events


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "SAMPLE_EVERY_S", 0)


def test_every_event_passes_the_publishing_checks():
    bounds = EventTimeBounds.of(Settings())
    for event in _run(jobs=12, showcase=True):
        parse_event(data=event_to_json(event), now=utc_now(), bounds=bounds)


def test_running_jobs_publish_gpu_cpu_and_memory_samples_between_running_and_the_outcome():
    events = _run(jobs=4, showcase=False)
    by_job: dict[str, list] = {}
    for event in events:
        by_job.setdefault(event.job_id, []).append(event)
    for job_events in by_job.values():
        submitted = job_events[0]
        assert isinstance(submitted, JobSubmitted)
        running = next(i for i, e in enumerate(job_events) if isinstance(e, JobStatusChanged) and e.new_status == "RUNNING")
        samples = [e for e in job_events if isinstance(e, JobMetricsSample)]
        assert samples and all(running < job_events.index(s) for s in samples)
        rounds = demo.SAMPLE_ROUNDS
        per_round = min(submitted.resource_request.nodes, 2) * max(min(submitted.resource_request.gpus, 4), 1)
        assert len(samples) >= rounds * per_round
        if submitted.resource_request.gpus:
            assert {s.gpu_id for s in samples} == set(range(min(submitted.resource_request.gpus, 4)))
            assert all(0 < s.gpu_pct <= 100 and s.cpu_pct > 0 and s.memory_gb > 0 for s in samples)
        assert [s.execution_time_s for s in samples] == sorted(s.execution_time_s for s in samples)
    assert not any(isinstance(e, JobCancelled) and e.cancelled_by == "demo" for e in events)  # no stray without showcase


def test_showcase_starts_with_a_runtime_history_then_shows_anomalies_and_a_dead_letter():
    settings = Settings()
    events = _run(jobs=12, showcase=True)
    past = [e for e in events if e.job_id.startswith("demo-history-")]
    completed = [e for e in past if isinstance(e, JobCompleted)]
    assert len(completed) == 2 * (settings.anomaly_min_samples + 2)
    assert events[:len(past)] == past  # the history comes first
    live = [e for e in events if not e.job_id.startswith("demo-history-")]
    jobs = list(dict.fromkeys(e.job_id for e in live))
    assert len(jobs) == 12
    types = {e.job_id: e.job_type for e in live if isinstance(e, JobSubmitted)}
    runtimes = {e.job_id: e.metrics_summary.execution_time_s for e in live if isinstance(e, JobCompleted)}
    anomalous = [job for job, seconds in runtimes.items() if seconds > 4 * TYPICAL_RUNTIME_S[types[job]]]
    assert anomalous == [jobs[1], jobs[5], jobs[9]]  # every fourth, the first one second
    assert all(abs(s - TYPICAL_RUNTIME_S[types[j]]) < 0.2 * TYPICAL_RUNTIME_S[types[j]]
               for j, s in runtimes.items() if j not in anomalous)
    assert any(isinstance(e, JobFailed) for e in live if e.job_id == jobs[2])  # recent failures at once
    strays = [e for e in live if isinstance(e, JobCancelled) and e.cancelled_by == "demo"]
    assert [e.job_id for e in strays] == [jobs[0], jobs[10]]
    first = [e for e in live if e.job_id == jobs[0]]
    assert any(isinstance(e, JobMetricsSample) and e.gpu_id is not None for e in first)  # heatmap cells at once


def test_history_runtimes_are_near_the_typical_ones():
    events = history(rng=random.Random(2), jobs_per_type=12, now=utc_now())
    types = {e.job_id: e.job_type for e in events if isinstance(e, JobSubmitted)}
    for event in events:
        if isinstance(event, JobCompleted):
            typical = TYPICAL_RUNTIME_S[types[event.job_id]]
            assert abs(event.metrics_summary.execution_time_s - typical) < 0.25 * typical
