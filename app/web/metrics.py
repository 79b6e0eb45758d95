"""Job-metrics analytics over HTTP (JSON shapes in docs/metrics.md).

* ``GET /api/metrics/jobs/{job_id}`` — the job's rollup; its owner or an operator; answered
  by the worker owning the key in ``job_metric_rollups``.
* ``GET /api/metrics/cluster?window=1m|1h|1d&limit=N`` — the newest N windows (default 10,
  1..500), each with a rollup per cluster and per node.
* ``GET /api/metrics/gpus`` — latest utilisation per node and GPU (the dashboard heatmap).
* ``GET /api/metrics/slow?limit=N`` — the N jobs with the largest execution time (default
  10, 1..100).
* ``GET /api/metrics/runtimes`` — per job type: completed-job runtime mean, σ, min, max and
  histogram (the anomaly detector's baseline).

All need a JWT (401 without a valid one). Aggregates keyed by source partition are merged
from the partitions this worker holds; ``partitions`` in each answer lists them (all 20 on
a single worker; see docs/metrics.md for several workers). 503 while recovering.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.web import Request, Response, View

from app.core.anomaly import type_distribution
from app.core.auth import Principal
from app.core.metrics_math import (
    RUNTIME_BUCKETS, WINDOWS, bucket_label, merge_rollups, parse_window_key, summarize, top_n, welford_std,
)
from app.core.timeutil import format_epoch_ms
from app.core.topic_specs import JOB_METRICS
from app.web.openapi import query_param
from app.web.route import USER, Owner, endpoint, page
from app.worker.main import app, settings
from tables.job_metrics import SLOW_JOBS_KEPT, gpu_latest, job_metric_rollups, metric_windows, slow_jobs
from tables.known_jobs import known_jobs
from tables.runtime_stats import runtime_stats

DEFAULT_WINDOWS, MAX_WINDOWS = 10, 500
DEFAULT_SLOW, MAX_SLOW = 10, SLOW_JOBS_KEPT


def _bad(web: View, *, field: str, reason: str) -> Response:
    return web.json({"error": "bad request", "field": field, "reason": reason}, status=400)


def _int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int | str:
    """The integer query parameter, or the reason it is refused."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return f"must be an integer between {low} and {high}, got {raw!r}"
    if not low <= value <= high:
        return f"must be between {low} and {high}, got {value}"
    return value


def _local_partitions() -> list[int]:
    """Partitions of ``job-metrics`` this worker consumes (all 20 on a single worker): the
    source partitions whose aggregates the answer holds."""
    topic = settings.topic_prefix + JOB_METRICS
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - no consumer yet: none
        return []
    return sorted(tp.partition for tp in assigned if tp.topic == topic)


def _summary(rollup: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(rollup)
    return {"count": summary.pop("count"), "metrics": summary}


# -- per job -------------------------------------------------------------------------------------
@page("/api/metrics/jobs/{job_id}")
@endpoint(access=USER, ready=True, owner=Owner(table=job_metric_rollups, key="job_id"), tags=["metrics"],
          summary="A job's metrics rollup (its owner or an operator)",
          responses={200: "the rollup", 403: "another user's job (not an operator)", 404: "no metrics for this job"})
async def get_job_metrics(web: View, request: Request, *, principal: Principal, job_id: str) -> Response:
    known = known_jobs.get(job_id)
    if known is None:
        return web.json({"error": "job not found", "job_id": job_id}, status=404)
    if not principal.operator and principal.user_id != known.get("user_id"):
        return web.json({"error": f"user {principal.user_id} may not read the metrics of job {job_id}"}, status=403)
    rollup = job_metric_rollups.get(job_id)
    body: dict[str, Any] = {
        "job_id": job_id, "user_id": known.get("user_id"), "job_type": known.get("job_type"),
        "cluster": known.get("cluster"), "status": known.get("status"),
    }
    if rollup is None:
        body.update({"count": 0, "metrics": None, "execution_time_s": None, "first_sample": None,
                     "last_sample": None, "nodes": [], "overrun_alert": None})
        return web.json(body)
    overrun = rollup.get("overrun")
    body.update({
        **_summary(rollup),
        "execution_time_s": rollup["execution_time_s"],
        "first_sample": format_epoch_ms(rollup["first_ms"]),
        "last_sample": format_epoch_ms(rollup["last_ms"]),
        "nodes": rollup["nodes"],
        "overrun_alert": None if not overrun else {"event_id": overrun["event_id"], **overrun["anomaly"]},
    })
    return web.json(body)


# -- cluster windows -----------------------------------------------------------------------------
def cluster_windows(*, window: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` windows of size ``window``, merged over the local partitions."""
    parts: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for key, value in metric_windows.items():
        _, size, scope, start, name = parse_window_key(key)
        if size == window and value is not None:
            parts[start][(scope, name)].append(value)
    result = []
    for start in sorted(parts, reverse=True)[:limit]:
        groups = parts[start]
        entry: dict[str, Any] = {"start": format_epoch_ms(start), "end": format_epoch_ms(start + WINDOWS[window]),
                                 "clusters": [], "nodes": []}
        for (scope, name) in sorted(groups):
            summary = {("cluster" if scope == "cluster" else "node"): name, **_summary(merge_rollups(groups[(scope, name)]))}
            entry["clusters" if scope == "cluster" else "nodes"].append(summary)
        result.append(entry)
    return result


@page("/api/metrics/cluster")
@endpoint(access=USER, ready=True, tags=["metrics"], summary="Newest cluster/node rollup windows",
          parameters=[query_param("window", "1m, 1h or 1d"), query_param("limit", "1..500, default 10", kind="integer")],
          responses={200: "windows", 400: "bad window or limit"})
async def get_cluster_metrics(web: View, request: Request, *, principal: Principal) -> Response:
    window = request.query.get("window", "1m")
    if window not in WINDOWS:
        return _bad(web, field="window", reason=f"must be one of {', '.join(WINDOWS)}, got {window!r}")
    limit = _int_param(request, "limit", default=DEFAULT_WINDOWS, low=1, high=MAX_WINDOWS)
    if isinstance(limit, str):
        return _bad(web, field="limit", reason=limit)
    return web.json({"window": window, "windows": cluster_windows(window=window, limit=limit),
                     "partitions": _local_partitions()})


# -- GPUs ----------------------------------------------------------------------------------------
def latest_gpus() -> list[dict[str, Any]]:
    newest: dict[tuple[str, int], dict[str, Any]] = {}
    for value in gpu_latest.values():
        if value is None:
            continue
        key = (value["node"], value["gpu_id"])
        if key not in newest or newest[key]["at_ms"] < value["at_ms"]:
            newest[key] = value
    return [{"node": v["node"], "gpu_id": v["gpu_id"], "gpu_pct": v["gpu_pct"], "job_id": v["job_id"],
             "timestamp": format_epoch_ms(v["at_ms"])} for _, v in sorted(newest.items())]


@page("/api/metrics/gpus")
@endpoint(access=USER, ready=True, tags=["metrics"], summary="Latest GPU utilisation per node and GPU",
          responses={200: "per node and GPU"})
async def get_gpu_metrics(web: View, request: Request, *, principal: Principal) -> Response:
    return web.json({"gpus": latest_gpus(), "partitions": _local_partitions()})


# -- slow jobs -----------------------------------------------------------------------------------
@page("/api/metrics/slow")
@endpoint(access=USER, ready=True, tags=["metrics"], summary="Jobs with the largest execution time",
          parameters=[query_param("limit", "1..100, default 10", kind="integer")],
          responses={200: "jobs", 400: "bad limit"})
async def get_slow_jobs(web: View, request: Request, *, principal: Principal) -> Response:
    limit = _int_param(request, "limit", default=DEFAULT_SLOW, low=1, high=MAX_SLOW)
    if isinstance(limit, str):
        return _bad(web, field="limit", reason=limit)
    entries = [job for value in slow_jobs.values() if value for job in value["jobs"]]
    return web.json({"jobs": top_n(entries, n=limit), "partitions": _local_partitions()})


# -- runtime distribution ------------------------------------------------------------------------
@page("/api/metrics/runtimes")
@endpoint(access=USER, ready=True, tags=["metrics"], summary="Runtime statistics per job type",
          responses={200: "per job type: mean, σ, min, max, histogram"})
async def get_runtime_distribution(web: View, request: Request, *, principal: Principal) -> Response:
    states: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, value in runtime_stats.items():
        if value is not None:
            states[key.split("|", 1)[1]].append(value)
    types = []
    for job_type, dist in sorted(type_distribution(states).items()):
        types.append({
            "job_type": job_type, "count": dist["n"], "mean_s": dist["mean"], "std_s": welford_std(dist),
            "min_s": dist["min"], "max_s": dist["max"],
            "histogram": [{"le": bucket_label(i), "count": c} for i, c in enumerate(dist["buckets"])],
        })
    return web.json({"job_types": types, "bucket_bounds_s": [bucket_label(i) for i in range(len(RUNTIME_BUCKETS))],
                     "min_samples": settings.anomaly_min_samples, "sigma": settings.anomaly_sigma,
                     "overrun_ratio": settings.anomaly_overrun_ratio})
