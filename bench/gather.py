"""Gathered reads: the latency of ``GET /api/jobs?limit=100`` and ``GET /api/stats`` with 1, 2
and 3 workers in one consumer group (issue #21: every read that spans partitions asks each
other worker for its part).

A group of the section's own (app id and topic prefix ``<run prefix>gather-``), RabbitMQ
bridge off, no standby replicas, takes ``ctx.events / 5`` job lifecycles (``--quick``: 100 jobs).
Then, for 1, 2 and 3 workers (each one started after the previous measurement), once the
group has settled — every worker ready, each holding some ``job-lifecycle`` partitions
(``/api/stats?local=true``), and the gathered ``/api/stats`` complete with every job — each path
is asked :data:`REQUESTS` times (``--quick``: fewer, and 1 and 2 workers only) one after another, round-robin over the
workers, with an operator token; p50 and p99 of the wall-clock time per request. Every answer
must be 200 and complete (``"partial": false``), or the run fails. ``/api/stats`` includes the
dead-letter topics' offsets read from Kafka (a fixed cost whatever the number of workers).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from bench.context import BenchContext, BenchError, figure, job_spacing, workload_start
from bench.worker import BenchWorker

TITLE = "Gathered reads with 1, 2 and 3 workers"
PATHS = {"jobs": "/api/jobs?limit=100", "stats": "/api/stats"}
REQUESTS = {False: 300, True: 40}
WORKERS = (1, 2, 3)
#: ``--quick`` (a smoke run of the harness): one and two workers (a third proves nothing more there).
QUICK_WORKERS = (1, 2)
ENV = {"COSMIC_RABBITMQ_BRIDGE_ENABLED": "false", "COSMIC_TABLE_STANDBY_REPLICAS": "0",
       "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": "10"}


def _get(base_url: str, path: str, token: str) -> tuple[int, Any, float]:
    """(status, JSON body, seconds)."""
    request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        return 0, repr(exc), time.perf_counter() - start
    seconds = time.perf_counter() - start
    try:
        return status, json.loads(raw or b"null"), seconds
    except ValueError:
        return status, raw[:200], seconds


def _settled(workers: list[BenchWorker], token: str, jobs: int) -> bool:
    for worker in workers:
        status, body, _ = _get(worker.base_url, "/api/stats?local=true", token)
        if status != 200 or not body["jobs"]["partitions"]:
            return False
        status, body, _ = _get(worker.base_url, "/api/stats", token)
        if status != 200 or body["partial"] or body["jobs"]["total"] != jobs:
            return False
    return True


async def _wait_settled(workers: list[BenchWorker], token: str, jobs: int, *, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    confirmed = 0
    while time.monotonic() < deadline:
        confirmed = confirmed + 1 if await asyncio.to_thread(_settled, workers, token, jobs) else 0
        if confirmed >= 2:  # the same complete answer twice, 1 s apart
            return
        await asyncio.sleep(1.0)
    raise BenchError(f"the group of {len(workers)} workers did not settle in {timeout:.0f} s:\n"
                     + workers[-1].log_tail())


def _measure(workers: list[BenchWorker], token: str, path: str, requests: int) -> list[float]:
    """Milliseconds per request, round-robin over the workers; every answer complete."""
    took = []
    for n in range(requests):
        status, body, seconds = _get(workers[n % len(workers)].base_url, path, token)
        if status != 200 or body.get("partial") is not False:
            raise BenchError(f"{path}: {status} {str(body)[:300]}")
        took.append(seconds * 1000)
    return took


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    settings = replace(ctx.settings, topic_prefix=ctx.topic_prefix + "gather-", app_id=ctx.settings.app_id + "-gather")
    jobs = 100 if ctx.quick else max(100, ctx.events // 5)
    requests = REQUESTS[ctx.quick]
    counts = QUICK_WORKERS if ctx.quick else WORKERS
    workers: list[BenchWorker] = []
    figures: dict[str, Any] = {}
    secret = secrets.token_urlsafe(32)  # the workers share it: a part checks the forwarded token
    try:
        for count in counts:
            workdir = ctx.workdir / f"gather-{count}"
            workdir.mkdir(parents=True, exist_ok=True)
            worker = BenchWorker(settings=settings, workdir=workdir)
            worker.env.update({**ENV, "COSMIC_JWT_SECRET": secret})
            workers.append(worker)
            seconds = await asyncio.to_thread(worker.start)
            ctx.log(f"gather: worker {count} ready in {seconds:.1f} s")
            token = workers[0].process.operator_token()
            if count == 1:
                workload = build_workload(jobs=jobs, seed=13, prefix=f"gather-{ctx.run_id}", start=workload_start(jobs=jobs),
                                          job_spacing_s=job_spacing(jobs=jobs))
                async with EventPublisher(settings=settings) as publisher:
                    await publisher.publish_many(workload.deliveries)
            await _wait_settled(workers, token, jobs)
            for name, path in PATHS.items():
                took = await asyncio.to_thread(_measure, workers, token, path, requests)
                for stat, value in (("p50", statistics.median(took)), ("p99", _p99(took))):
                    figures[f"{name}_{count}w_{stat}"] = figure(
                        label=f"GET {path}, {count} worker{'s' if count > 1 else ''}: {stat}", unit="ms",
                        runs=[value], digits=2)
                ctx.log(f"gather: {count} workers, {path}: p50 {statistics.median(took):.2f} ms, "
                        f"p99 {_p99(took):.2f} ms")
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
    return {"params": {"jobs": jobs, "requests_per_path": requests, "workers": list(counts)}, "figures": figures}


def markdown(result: dict[str, Any]) -> str:
    params, figs = result["params"], result["figures"]
    rows = ["| workers | path | p50 | p99 |", "| --- | --- | --- | --- |"]
    for count in params["workers"]:
        for name, path in PATHS.items():
            rows.append(f"| {count} | `GET {path}` | {figs[f'{name}_{count}w_p50']['value']:.2f} ms | "
                        f"{figs[f'{name}_{count}w_p99']['value']:.2f} ms |")
    return "\n".join([
        f"{params['jobs']:,} jobs in one group; each path asked {params['requests_per_path']} times one after "
        "another, round-robin over the workers, once the group settled (every answer 200 and complete). "
        "With one worker nothing is asked of anybody; with N, the answering worker computes its part and asks "
        "the N − 1 others for theirs concurrently (`app/web/gather.py`). `/api/stats` also reads the "
        "dead-letter topics' offsets from Kafka, the same cost for any N.",
        "",
        *rows,
    ])
