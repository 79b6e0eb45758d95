"""Complete answers with two and three workers in one group (issue #21), on the real stack.

One worker takes a workload (job lifecycles with their audit records, and metrics samples)
holding every partition; its answer to every read that spans partitions is the reference.
A second worker then joins the group, then a third; each time, once the partitions are split
among them, each worker's answer to every such read equals the reference — the jobs pages, stats, cluster
windows, GPUs, slow jobs, runtimes, an actor's audit records and table dumps — and paging
through ``/api/jobs`` from any worker yields every job exactly once. Each worker alone
(``?local=true``) holds only part of it, so the answers were gathered.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from typing import Any

from app.core.auth import mint_token
from app.core.models import JobSubmitted
from app.core.settings import Settings
from app.ops.demo import metrics_samples
from app.ops.worker_process import WorkerProcess, free_port
from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async
from support.workers import wait_for_final_states

JOBS = 160
SAMPLED_JOBS = 40
USER = "user-3"  # build_workload's users are user-0 .. user-19
FLAGS = ("partial", "missing_partitions")
COMMON = {"COSMIC_RABBITMQ_BRIDGE_ENABLED": "false", "COSMIC_TABLE_STANDBY_REPLICAS": "0",
          "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": "6"}


def _get(worker: WorkerProcess, path: str, token: str) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(worker.base_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    if headers.get("Content-Type", "").startswith("application/x-ndjson"):
        return status, raw.decode().splitlines(), headers
    return status, json.loads(raw or b"null"), headers


def _all_jobs(worker: WorkerProcess, token: str, *, limit: int, query: str = "") -> list[dict[str, Any]]:
    """Every page of ``/api/jobs`` from ``worker`` (each page gathered, complete)."""
    jobs: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(1000):
        status, body, _ = _get(worker, f"/api/jobs?limit={limit}{query}{cursor}", token)
        assert status == 200 and body["partial"] is False, (status, body)
        jobs.extend(body["jobs"])
        if body["next_cursor"] is None:
            return jobs
        cursor = f"&cursor={body['next_cursor']}"
    raise AssertionError("paging did not end")


def _answers(worker: WorkerProcess, *, operator: str, user: str) -> dict[str, Any]:
    """Every gathered read of ``worker``: path → (status, body); JSON bodies without the flags
    (checked separately) and the stats without the dead-letter sizes (not partitioned)."""
    paths = {
        "/api/stats": operator, f"/api/jobs?limit=1000&user_id={USER}": operator, "/api/jobs?limit=25": user,
        "/api/metrics/cluster?window=1m&limit=500": user, "/api/metrics/cluster?window=1h&limit=500": user,
        "/api/metrics/gpus": user, "/api/metrics/slow?limit=100": user, "/api/metrics/slow?limit=3": user,
        "/api/metrics/runtimes": user, f"/api/audit/actors/{USER}": operator,
        "/api/tables/job_state": operator, "/api/tables/job_counts": operator,
        "/api/tables/slow_jobs?prefix=1": operator, "/api/tables/runtime_stats": operator,
    }
    found: dict[str, Any] = {}
    for path, token in paths.items():
        status, body, headers = _get(worker, path, token)
        if isinstance(body, dict):
            assert all(body.get(flag) in (False, []) for flag in FLAGS), (path, body)
            body = {k: v for k, v in body.items() if k not in FLAGS}
            body.pop("dlq", None), body.pop("dlq_total", None)
        elif "runtime_stats" not in path:  # a global table: answered locally, no flags
            assert headers.get("X-Cosmic-Partial") == "false", (path, headers)
        found[path] = (status, body)
    return found


async def _publish_workload(*, settings: Settings, worker: WorkerProcess, uid: str) -> Any:
    """The job lifecycles (and their audit records), then, once every job is known, metrics
    samples of some of them."""
    workload = build_workload(jobs=JOBS, seed=21, prefix=f"job-{uid}")
    rng = random.Random(4)
    submitted = [e for e in workload.deliveries if isinstance(e, JobSubmitted)][:SAMPLED_JOBS]
    samples = [s for i, job in enumerate(submitted) for k in range(3)
               for s in metrics_samples(job=job, rng=rng, at=job.timestamp, elapsed_s=float(60 * k + i))]
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(workload.deliveries)
        await asyncio.to_thread(wait_for_final_states, worker=worker, workload=workload, timeout=240)
        await publisher.publish_many(samples)
    return workload, samples


async def test_every_gathered_read_of_any_of_two_or_three_workers_equals_one_workers(worker_factory, worker_env, uid, tmp_path):
    settings = Settings.from_env(environ=worker_env)
    first = await asyncio.to_thread(worker_factory(**COMMON, COSMIC_DATA_DIR=str(tmp_path / "w1")).start)
    operator = first.operator_token()
    user = mint_token(settings=settings, sub=USER)
    workload, samples = await _publish_workload(settings=settings, worker=first, uid=uid)

    def sampled() -> int:
        status, body, _ = _get(first, "/api/metrics/cluster?window=1d&limit=500", user)
        return sum(c["count"] for w in body["windows"] for c in w["clusters"]) if status == 200 else -1

    await wait_until_async(lambda: asyncio.to_thread(sampled), timeout=120, interval=1.0,
                           what="every metrics sample rolled up", accept=lambda n: n == len(samples))
    reference = await asyncio.to_thread(_answers, first, operator=operator, user=user)
    assert all(status == 200 for status, _ in reference.values()), reference
    whole_jobs = await asyncio.to_thread(_all_jobs, first, operator, limit=17)
    assert sorted(j["job_id"] for j in whole_jobs) == sorted(workload.final_status)
    assert reference["/api/stats"][1]["jobs"]["total"] == JOBS
    for path, key in (("/api/metrics/gpus", "gpus"), ("/api/metrics/slow?limit=100", "jobs"),
                      ("/api/metrics/runtimes", "job_types"), ("/api/metrics/cluster?window=1h&limit=500", "windows"),
                      (f"/api/audit/actors/{USER}", "records")):
        assert reference[path][1][key], f"nothing to compare in {path}"
    assert len(reference["/api/tables/job_state"][1]) == JOBS and reference["/api/tables/runtime_stats"][1]
    mine = reference["/api/jobs?limit=25"][1]["jobs"]
    assert mine and all(j["user_id"] == USER for j in mine)

    group = [first]
    for size in (2, 3):  # a second worker joins, then a third: every answer stays the reference
        group.append(await asyncio.to_thread(worker_factory(**COMMON, COSMIC_DATA_DIR=str(tmp_path / f"w{size}"),
                                                            COSMIC_WEB_PORT=str(free_port())).start))
        await _check_group(group, reference=reference, whole_jobs=whole_jobs, workload=workload,
                           operator=operator, user=user)


async def _check_group(group: list[WorkerProcess], *, reference: dict[str, Any], whole_jobs: list[dict[str, Any]],
                       workload: Any, operator: str, user: str) -> None:
    """Once the partitions are split among ``group``, each member's answers equal the reference."""

    def split() -> list[Any]:
        """Each worker's own job-lifecycle partitions, once every one holds some and all are ready."""
        held = []
        for worker in group:
            status, body, _ = _get(worker, "/api/stats?local=true", operator)
            if status != 200 or not body["missing_partitions"] or not body["jobs"]["partitions"]:
                return []
            held.append(body["jobs"]["partitions"])
        return held

    held = await wait_until_async(lambda: asyncio.to_thread(split), timeout=180, interval=1.0,
                                  what=f"the partitions split among {len(group)} workers")
    assert sum(map(len, held)) == len(set().union(*held)), held  # disjoint
    assert all(held), held

    async def settled(worker: WorkerProcess) -> dict[str, Any]:
        def complete() -> dict[str, Any] | None:
            try:
                return _answers(worker, operator=operator, user=user)
            except AssertionError:  # a part missing while the group settles (503, or flagged)
                return None
        return await wait_until_async(lambda: asyncio.to_thread(complete), timeout=120, interval=1.0,
                                      what=f"complete answers from {worker.base_url}",
                                      accept=lambda a: a is not None and all(s == 200 for s, _ in a.values()))

    for worker in group:
        answers = await settled(worker)
        for path, expected in reference.items():
            assert answers[path] == expected, f"{worker.base_url}{path} differs from one worker's answer ({len(group)} workers)"
        for limit in (1, 17, 1000):
            jobs = await asyncio.to_thread(_all_jobs, worker, operator, limit=limit)
            ids = [j["job_id"] for j in jobs]
            assert ids == sorted(workload.final_status), f"{worker.base_url}: paging by {limit} ({len(group)} workers)"
        own = await asyncio.to_thread(_all_jobs, worker, user, limit=5)
        assert own == [j for j in whole_jobs if j["user_id"] == USER]
        status, body, _ = _get(worker, "/api/stats?local=true", operator)
        assert body["partial"] is True and body["jobs"]["total"] < JOBS  # alone, it holds only part
        status, _, _ = _get(worker, "/api/jobs", user[:-4] + "AAAA")  # a forged signature
        assert status == 401
