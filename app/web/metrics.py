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

All need a JWT (401 without a valid one). Every read but the per-job one is gathered from
every worker of the group (:mod:`app.web.gather`): each answers for the partitions it holds
(``job-metrics``'s, or ``job-lifecycle``'s for the runtimes), the parts merge exactly (window
rollups of one node or cluster combine, in key order; the slow jobs are re-ranked; the
newest GPU sample wins), and ``partitions`` in each answer lists those answered for (all 20
or 10). 503 while recovering, or when a worker's part is missing (``allow_partial``).
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
from app.web.gather import Gather
from app.web.openapi import query_param
from app.web.route import USER, Owner, endpoint, page
from app.worker.main import app, settings
from tables.job_counts import job_counts
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
def _held(key: str, sep: str, partitions: frozenset[int] | None) -> bool:
    """Whether a key ``<partition><sep>…`` is of one of ``partitions`` (None: all)."""
    return partitions is None or int(key.split(sep, 1)[0]) in partitions


def window_part(*, window: str, limit: int, partitions: frozenset[int] | None) -> dict[str, dict[str, Any]]:
    """This worker's window rollups of size ``window`` (key → value) in its own newest ``limit``
    window starts: the newest ``limit`` starts of the group are among the union of these."""
    found: dict[str, dict[str, Any]] = {}
    starts: set[int] = set()
    for key, value in metric_windows.items():
        if value is None or not _held(key, "|", partitions):
            continue
        _, size, _, start, _ = parse_window_key(key)
        if size == window:
            found[key] = value
            starts.add(start)
    newest = set(sorted(starts, reverse=True)[:limit])
    return {key: value for key, value in found.items() if parse_window_key(key)[3] in newest}


def cluster_windows(*, window: str, limit: int, rollups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest ``limit`` windows of ``rollups`` (window key → rollup, any partitions): each
    cluster's and node's rollups merged over the partitions, in key order (the same sums
    whichever workers held them)."""
    parts: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for key in sorted(rollups):
        _, size, scope, start, name = parse_window_key(key)
        if size == window:
            parts[start][(scope, name)].append(rollups[key])
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


def _partitions_of(parts: list[dict[str, Any]]) -> list[int]:
    return sorted(p for part in parts for p in part["partitions"])


def merge_cluster(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    window, limit = parts[0]["window"], parts[0]["limit"]
    rollups = {key: value for part in parts for key, value in part["rollups"].items()}
    return {"window": window, "windows": cluster_windows(window=window, limit=limit, rollups=rollups),
            "partitions": _partitions_of(parts)}


@page("/api/metrics/cluster")
@endpoint(access=USER, ready=True, gather=Gather(scope=slow_jobs, merge=merge_cluster), tags=["metrics"],
          summary="Newest cluster/node rollup windows (gathered from every worker)",
          parameters=[query_param("window", "1m, 1h or 1d"), query_param("limit", "1..500, default 10", kind="integer")],
          responses={200: "windows", 400: "bad window or limit"})
async def get_cluster_metrics(web: View, request: Request, *, principal: Principal,
                              partitions: frozenset[int] | None) -> dict[str, Any] | Response:
    window = request.query.get("window", "1m")
    if window not in WINDOWS:
        return _bad(web, field="window", reason=f"must be one of {', '.join(WINDOWS)}, got {window!r}")
    limit = _int_param(request, "limit", default=DEFAULT_WINDOWS, low=1, high=MAX_WINDOWS)
    if isinstance(limit, str):
        return _bad(web, field="limit", reason=limit)
    return {"window": window, "limit": limit, "partitions": _answered(partitions),
            "rollups": window_part(window=window, limit=limit, partitions=partitions)}


def _answered(partitions: frozenset[int] | None) -> list[int]:
    """The job-metrics partitions a part answers for."""
    return sorted(partitions) if partitions is not None else _local_partitions()


# -- GPUs ----------------------------------------------------------------------------------------
def latest_gpus(samples: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest sample per node and GPU of ``samples`` (gpu_latest key → sample, any
    partitions); of two equally new ones, the one of the greater key."""
    newest: dict[tuple[str, int], tuple[int, str]] = {}
    for key, value in samples.items():
        gpu = (value["node"], value["gpu_id"])
        if gpu not in newest or newest[gpu] < (value["at_ms"], key):
            newest[gpu] = (value["at_ms"], key)
    chosen = [samples[key] for _, (_, key) in sorted(newest.items())]
    return [{"node": v["node"], "gpu_id": v["gpu_id"], "gpu_pct": v["gpu_pct"], "job_id": v["job_id"],
             "timestamp": format_epoch_ms(v["at_ms"])} for v in chosen]


def merge_gpus(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    samples = {key: value for part in parts for key, value in part["samples"].items()}
    return {"gpus": latest_gpus(samples), "partitions": _partitions_of(parts)}


@page("/api/metrics/gpus")
@endpoint(access=USER, ready=True, gather=Gather(scope=slow_jobs, merge=merge_gpus), tags=["metrics"],
          summary="Latest GPU utilisation per node and GPU (gathered from every worker)",
          responses={200: "per node and GPU"})
async def get_gpu_metrics(web: View, request: Request, *, principal: Principal,
                          partitions: frozenset[int] | None) -> dict[str, Any]:
    samples = {key: value for key, value in gpu_latest.items() if value is not None and _held(key, "|", partitions)}
    # only this worker's newest per GPU travels
    newest = {(v["node"], v["gpu_id"]): (v["at_ms"], k) for k, v in sorted(samples.items(), key=lambda kv: (kv[1]["at_ms"], kv[0]))}
    return {"samples": {key: samples[key] for _, key in newest.values()}, "partitions": _answered(partitions)}


# -- slow jobs -----------------------------------------------------------------------------------
def merge_slow(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """Each part's top ``limit``, re-ranked: the group's top ``limit`` are among them."""
    return {"jobs": top_n((job for part in parts for job in part["jobs"]), n=parts[0]["limit"]),
            "partitions": _partitions_of(parts)}


@page("/api/metrics/slow")
@endpoint(access=USER, ready=True, gather=Gather(scope=slow_jobs, merge=merge_slow), tags=["metrics"],
          summary="Jobs with the largest execution time (gathered from every worker)",
          parameters=[query_param("limit", "1..100, default 10", kind="integer")],
          responses={200: "jobs", 400: "bad limit"})
async def get_slow_jobs(web: View, request: Request, *, principal: Principal,
                        partitions: frozenset[int] | None) -> dict[str, Any] | Response:
    limit = _int_param(request, "limit", default=DEFAULT_SLOW, low=1, high=MAX_SLOW)
    if isinstance(limit, str):
        return _bad(web, field="limit", reason=limit)
    entries = [job for key, value in slow_jobs.items() if value and (partitions is None or int(key) in partitions)
               for job in value["jobs"]]
    return {"jobs": top_n(entries, n=limit), "limit": limit, "partitions": _answered(partitions)}


# -- runtime distribution ------------------------------------------------------------------------
def runtime_types(states: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per job type, from ``runtime_stats`` states (``<partition>|<job_type>`` → state), merged
    in key order (the same figures whichever workers held them)."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in sorted(states):
        by_type[key.split("|", 1)[1]].append(states[key])
    types = []
    for job_type, dist in sorted(type_distribution(by_type).items()):
        types.append({
            "job_type": job_type, "count": dist["n"], "mean_s": dist["mean"], "std_s": welford_std(dist),
            "min_s": dist["min"], "max_s": dist["max"],
            "histogram": [{"le": bucket_label(i), "count": c} for i, c in enumerate(dist["buckets"])],
        })
    return types


def merge_runtimes(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    states = {key: value for part in parts for key, value in part["states"].items()}
    return {"job_types": runtime_types(states),
            "bucket_bounds_s": [bucket_label(i) for i in range(len(RUNTIME_BUCKETS))],
            "min_samples": settings.anomaly_min_samples, "sigma": settings.anomaly_sigma,
            "overrun_ratio": settings.anomaly_overrun_ratio,
            "partitions": sorted(p for part in parts for p in part["partitions"])}


@page("/api/metrics/runtimes")
@endpoint(access=USER, ready=True, gather=Gather(scope=job_counts, merge=merge_runtimes), tags=["metrics"],
          summary="Runtime statistics per job type (each worker answers for its job-lifecycle partitions)",
          responses={200: "per job type: mean, σ, min, max, histogram"})
async def get_runtime_distribution(web: View, request: Request, *, principal: Principal,
                                   partitions: frozenset[int] | None) -> dict[str, Any]:
    # runtime_stats is global (every worker holds all of it); each part still answers for the
    # job-lifecycle partitions it holds, so the merge counts every partition's state once
    states = {key: value for key, value in runtime_stats.items() if value is not None and _held(key, "|", partitions)}
    held = sorted(partitions) if partitions is not None else sorted({int(k.split("|", 1)[0]) for k in states})
    return {"states": states, "partitions": held}
