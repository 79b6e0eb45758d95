"""Job-metrics analytics end to end on a real worker: 50 jobs on 4 nodes → the per-job
rollups, the 1m/1h/1d windows per node and cluster, the GPU heatmap and the slow-job list
served over HTTP equal the values computed here independently; bad samples land in
``job-metrics.dlq`` with their reason; a runtime outlier and an overrun raise SystemAlerts
and notify the owner."""

from __future__ import annotations

import asyncio
import json
import math
import random
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agents.runtime_anomaly import ALERT_COMPONENT
from app.core.auth import mint_token
from app.core.codecs import Codecs
from app.core.ids import derived_id
from app.core.models import (
    JobCompleted, JobMetricsSample, JobQueued, JobStatusChanged, JobSubmitted, MetricsSummary, ResourceRequest,
)
from app.core.settings import Settings
from app.core.timeutil import format_timestamp
from app.ops.topic_reader import read_topic
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async

NODES = ("c101-001", "c101-002", "c102-001", "c102-002")
METRICS = ("cpu_pct", "gpu_pct", "memory_gb", "io_mb_s")
WINDOW_MS = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
DEADLINE_S = 120


def _http(base: str, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def _until(what: str, check, *, deadline_s: float = DEADLINE_S):  # noqa: ANN001, ANN202
    """Poll ``check`` (sync, run in a thread) until it returns something truthy."""
    return await wait_until_async(lambda: asyncio.to_thread(check), timeout=deadline_s, interval=1.0, what=what)


def _base(name: str, *, at: datetime, user: str) -> dict:
    return dict(event_id=str(uuid.uuid4()), event_type=name, timestamp=at, correlation_id=str(uuid.uuid4()),
                user_id=user, schema_version=1)


def _start_jobs(jobs: list[dict], *, at: datetime) -> list:
    events = []
    for job in jobs:
        jid, user = job["job_id"], job["user"]
        events += [
            JobSubmitted(**_base("JobSubmitted", at=at, user=user), job_id=jid, tacc_system=job["cluster"],
                         resource_request=ResourceRequest(nodes=2, gpus=2, walltime="04:00:00"),
                         estimated_cost_usd=3.5, priority=5, job_type=job["job_type"]),
            JobQueued(**_base("JobQueued", at=at + timedelta(milliseconds=1), user=user), job_id=jid,
                      queue_name="normal"),
            JobStatusChanged(**_base("JobStatusChanged", at=at + timedelta(milliseconds=2), user=user), job_id=jid,
                             previous_status="QUEUED", new_status="RUNNING"),
        ]
    return events


def _completed(job: dict, runtime: float, *, at: datetime) -> JobCompleted:
    return JobCompleted(**_base("JobCompleted", at=at, user=job["user"]), job_id=job["job_id"],
                        metrics_summary=MetricsSummary(execution_time_s=runtime, cpu_pct_mean=50.0,
                                                       gpu_pct_mean=50.0, memory_gb_max=8.0),
                        result_location=f"s3://results/{job['job_id']}/")


def _expected_rollup(samples: list[JobMetricsSample]) -> dict:
    return {"count": len(samples),
            **{m: {"mean": math.fsum(getattr(s, m) for s in samples) / len(samples),
                   "max": max(getattr(s, m) for s in samples)} for m in METRICS}}


def _assert_rollup(served: dict, expected: dict, where: str) -> None:
    assert served["count"] == expected["count"], where
    for m in METRICS:
        assert served["metrics"][m]["mean"] == pytest.approx(expected[m]["mean"], rel=1e-9), (where, m)
        assert served["metrics"][m]["max"] == expected[m]["max"], (where, m)


async def test_fifty_jobs_on_four_nodes(worker_factory, worker_env, uid):
    settings = Settings.from_env(environ=worker_env)
    worker = await asyncio.to_thread(worker_factory().start)
    base = worker.base_url
    rng = random.Random(7)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    jobs = [{"job_id": f"job-{uid}-{i:02d}", "user": "ann" if i % 5 else "bob",
             "job_type": "calibration" if i % 2 == 0 else "imaging",
             "cluster": "frontera" if i < 30 else "lonestar6"} for i in range(50)]
    by_id = {j["job_id"]: j for j in jobs}
    ann = mint_token(settings=settings, sub="ann")
    operator = worker.operator_token()

    # -- 50 running jobs, then 6 samples each over ~5 minutes of event time on 4 nodes -----------
    start = now - timedelta(minutes=10)
    samples: list[JobMetricsSample] = []
    for i, job in enumerate(jobs):
        for k in range(6):
            at = start + timedelta(seconds=50 * k, milliseconds=37 * i + 1)  # unique event times
            samples.append(JobMetricsSample(
                **_base("JobMetricsSample", at=at, user=job["user"]), job_id=job["job_id"], node=NODES[(i + k) % 4],
                cpu_pct=round(rng.uniform(0, 100), 3), gpu_pct=round(rng.uniform(0, 100), 3),
                memory_gb=round(rng.uniform(1, 256), 3), io_mb_s=round(rng.uniform(0, 900), 3),
                execution_time_s=float(60 * k + i), gpu_id=(i + k) % 2,
            ))
    bad = [
        samples[0].derive(event_id=str(uuid.uuid4()), cpu_pct=-5.0),
        samples[1].derive(event_id=str(uuid.uuid4()), gpu_pct=150.0),
        samples[2].derive(event_id=str(uuid.uuid4()), memory_gb=math.nan),
        samples[3].derive(event_id=str(uuid.uuid4()), job_id=f"ghost-{uid}"),
    ]
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(_start_jobs(jobs, at=start - timedelta(minutes=1)))
        await _until("every job known to the metrics side", lambda: all(
            _http(base, f"/api/metrics/jobs/{j['job_id']}", operator)[0] == 200 for j in jobs))
        await publisher.publish_many(samples + bad)
        await publisher.publish_many([samples[10]])  # a redelivered copy (same event_id)

    def all_rolled_up() -> bool:
        return all(_http(base, f"/api/metrics/jobs/{j['job_id']}", operator)[1].get("count") == 6 for j in jobs)

    await _until("50 jobs x 6 samples rolled up", all_rolled_up)

    # -- per-job rollups -----------------------------------------------------------------------
    per_job: dict[str, list] = defaultdict(list)
    for s in samples:
        per_job[s.job_id].append(s)
    for job in jobs:
        status, served = _http(base, f"/api/metrics/jobs/{job['job_id']}", operator)
        mine = per_job[job["job_id"]]
        assert status == 200
        _assert_rollup(served, _expected_rollup(mine), job["job_id"])
        assert served["execution_time_s"] == max(s.execution_time_s for s in mine)
        assert served["nodes"] == sorted({s.node for s in mine})
        assert served["cluster"] == job["cluster"] and served["job_type"] == job["job_type"]
        assert served["last_sample"] == format_timestamp(max(s.timestamp for s in mine))

    # -- windows per node and per cluster ------------------------------------------------------
    for window, size in WINDOW_MS.items():
        expected: dict[int, dict[tuple[str, str], list]] = defaultdict(lambda: defaultdict(list))
        for s in samples:
            ms = int(s.timestamp.timestamp() * 1000)
            expected[ms - ms % size][("node", s.node)].append(s)
            expected[ms - ms % size][("cluster", by_id[s.job_id]["cluster"])].append(s)
        status, body = _http(base, f"/api/metrics/cluster?window={window}&limit=500", ann)
        assert status == 200 and body["window"] == window and body["partitions"] == list(range(20))
        served = {w["start"]: w for w in body["windows"]}
        assert len(served) == len(expected)
        for start_ms, groups in expected.items():
            entry = served[format_timestamp(datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc))]
            got = {("node", n["node"]): n for n in entry["nodes"]}
            got.update({("cluster", c["cluster"]): c for c in entry["clusters"]})
            assert set(got) == set(groups), (window, start_ms)
            for group, members in groups.items():
                _assert_rollup(got[group], _expected_rollup(members), f"{window} {start_ms} {group}")

    # -- GPU heatmap and slow jobs -------------------------------------------------------------
    newest: dict[tuple[str, int], JobMetricsSample] = {}
    for s in samples:
        if (s.node, s.gpu_id) not in newest or newest[(s.node, s.gpu_id)].timestamp < s.timestamp:
            newest[(s.node, s.gpu_id)] = s
    status, body = _http(base, "/api/metrics/gpus", ann)
    assert status == 200
    assert body["gpus"] == [{"node": n, "gpu_id": g, "gpu_pct": s.gpu_pct, "job_id": s.job_id,
                             "timestamp": format_timestamp(s.timestamp)} for (n, g), s in sorted(newest.items())]
    status, body = _http(base, "/api/metrics/slow?limit=7", ann)
    slowest = sorted(((max(s.execution_time_s for s in per_job[j]), j) for j in per_job), key=lambda t: (-t[0], t[1]))
    assert status == 200 and [(e["execution_time_s"], e["job_id"]) for e in body["jobs"]] == slowest[:7]

    # -- bad input: dead letters with reasons; nothing counted twice -------------------------
    def dead_letters() -> list[tuple[str, str]] | None:
        records = asyncio.run(read_topic(bootstrap=settings.kafka_bootstrap,
                                         topic=f"{settings.topic_prefix}job-metrics.dlq"))
        found = sorted((dict(r.headers)["dlq.reason"].decode(), dict(r.headers)["dlq.error_message"].decode())
                       for r in records)
        return found if len(found) >= 4 else None

    found = await _until("four dead letters", dead_letters)  # the duplicate is dropped, not dead-lettered
    assert [reason for reason, _ in found] == ["invalid-sample", "invalid-sample", "invalid-sample", "unknown-job"]
    messages = " ".join(message for _, message in found)
    assert "cpu_pct" in messages and "gpu_pct" in messages and "memory_gb" in messages

    # -- HTTP errors ---------------------------------------------------------------------------
    first = jobs[1]["job_id"]  # ann's
    assert _http(base, f"/api/metrics/jobs/{first}", None)[0] == 401
    assert _http(base, f"/api/metrics/jobs/{jobs[0]['job_id']}", ann)[0] == 403  # bob's job
    assert _http(base, f"/api/metrics/jobs/{first}", ann)[0] == 200
    assert _http(base, f"/api/metrics/jobs/nope-{uid}", ann)[0] == 404
    assert _http(base, "/api/metrics/gpus", None)[0] == 401
    status, body = _http(base, "/api/metrics/cluster?window=5m", ann)
    assert status == 400 and body["field"] == "window"
    status, body = _http(base, "/api/metrics/slow?limit=0", ann)
    assert status == 400 and body["field"] == "limit"

    # -- runtime anomaly and overrun -----------------------------------------------------------
    calibration = [j for j in jobs if j["job_type"] == "calibration"]
    normal, outlier_job, still_running = calibration[:12], calibration[12], calibration[13]
    done_at = now - timedelta(minutes=2)
    async with EventPublisher(settings=settings) as publisher:
        # two balanced values: whatever order the partitions are read in, none is beyond 2σ
        await publisher.publish_many([_completed(j, 1000.0 + 10 * (n % 2), at=done_at) for n, j in enumerate(normal)])

        def learned() -> bool:
            types = _http(base, "/api/metrics/runtimes", ann)[1]["job_types"]
            return any(t["job_type"] == "calibration" and t["count"] == 12 for t in types)

        await _until("12 calibration runtimes learned", learned)
        outlier = _completed(outlier_job, 5000.0, at=done_at + timedelta(seconds=1))
        overrun = samples[0].derive(event_id=str(uuid.uuid4()), job_id=still_running["job_id"],
                                    execution_time_s=2000.0, timestamp=now)
        await publisher.publish_many([outlier, overrun])

    codecs = Codecs(settings=settings)

    def alerts() -> list | None:
        records = asyncio.run(read_topic(bootstrap=settings.kafka_bootstrap,
                                         topic=f"{settings.topic_prefix}system-health"))
        events = [codecs.for_topic("system-health").decode(r.value) for r in records]
        found = [e for e in events if e.event_type == "SystemAlert" and e.component == ALERT_COMPONENT]
        wanted = {outlier_job["job_id"], still_running["job_id"]}
        return found if wanted <= {a.job_id for a in found} else None

    found = await _until("the two SystemAlerts", alerts)
    assert sorted((a.rule, a.job_id) for a in found) == [("runtime_anomaly", outlier_job["job_id"]),
                                                         ("runtime_overrun", still_running["job_id"])]
    found_alerts = {a.rule: a for a in found}
    assert found_alerts["runtime_anomaly"].event_id == derived_id(outlier.event_id, "alert:runtime_anomaly")
    assert found_alerts["runtime_anomaly"].metrics["samples"] == 12.0
    assert found_alerts["runtime_overrun"].event_id == derived_id(overrun.event_id, "alert:runtime_overrun")

    def notified() -> set | None:
        records = asyncio.run(read_topic(bootstrap=settings.kafka_bootstrap,
                                         topic=f"{settings.topic_prefix}notifications"))
        ids = {codecs.for_topic("notifications").decode(r.value).event_id for r in records}
        wanted = {derived_id(outlier.event_id, "notification:runtime_anomaly"),
                  derived_id(overrun.event_id, "notification:runtime_overrun")}
        return wanted if wanted <= ids else None

    await _until("the owners' anomaly notifications", notified)
