"""The merges of the gathered reads: pages of ``GET /api/jobs`` stay exact across workers (every
job exactly once, in job_id order, whatever the split), and ``/api/stats`` counts add."""

from __future__ import annotations

import random
from typing import Any

import pytest

from app.web.jobs import decode_page_cursor, merge_job_pages, page_part

STATUSES = ("SUBMITTED", "RUNNING", "COMPLETED")


def _jobs(n: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(7)
    return {f"job-{i:04d}": {"job_id": f"job-{i:04d}", "user_id": rng.choice(["alice", "bob"]),
                             "status": rng.choice(STATUSES), "history": ["x"]} for i in range(n)}


def _split(jobs: dict[str, dict[str, Any]], members: int) -> list[dict[str, dict[str, Any]]]:
    shards: list[dict[str, dict[str, Any]]] = [{} for _ in range(members)]
    for job_id, state in jobs.items():
        shards[hash(job_id) % members][job_id] = state
    return shards


def _page_through(shards, *, limit: int, status=None, user_id=None) -> list[str]:
    seen: list[str] = []
    after = ""
    for _ in range(10_000):
        parts = [{"jobs": page_part(states=shard.items(), after=after, status=status, user_id=user_id, limit=limit),
                  "limit": limit, "filters": {"status": status, "user_id": user_id}} for shard in shards]
        body = merge_job_pages(web=None, parts=parts, request=None)
        assert body["count"] == len(body["jobs"]) <= limit
        seen.extend(job["job_id"] for job in body["jobs"])
        if body["next_cursor"] is None:
            return seen
        assert body["count"] == limit
        after = decode_page_cursor(cursor=body["next_cursor"], status=status, user_id=user_id)
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("members", [1, 2, 3, 5])
@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
def test_paging_through_the_gathered_list_yields_every_job_once_in_order(members, limit):
    jobs = _jobs(237)
    seen = _page_through(_split(jobs, members), limit=limit)
    assert seen == sorted(jobs)


def test_the_filters_apply_in_every_part():
    jobs = _jobs(120)
    seen = _page_through(_split(jobs, 3), limit=10, status="RUNNING", user_id="alice")
    assert seen == sorted(j for j, s in jobs.items() if s["status"] == "RUNNING" and s["user_id"] == "alice")
    parts = [{"jobs": page_part(states=shard.items(), after="", status=None, user_id=None, limit=5),
              "limit": 5, "filters": {"status": None, "user_id": None}} for shard in _split(jobs, 2)]
    assert all("history" not in job for job in merge_job_pages(web=None, parts=parts, request=None)["jobs"])


def test_an_exact_last_page_has_no_next_cursor():
    shards = _split(_jobs(20), 2)
    parts = [{"jobs": page_part(states=s.items(), after="", status=None, user_id=None, limit=20),
              "limit": 20, "filters": {"status": None, "user_id": None}} for s in shards]
    body = merge_job_pages(web=None, parts=parts, request=None)
    assert body["count"] == 20 and body["next_cursor"] is None


async def test_stats_counts_add_over_the_parts(monkeypatch):
    import app.web.stats as stats

    async def sizes(*, settings):  # noqa: ANN001, ANN202
        return {"job-lifecycle.dlq": 2, "job-metrics.dlq": 1}

    monkeypatch.setattr(stats, "dlq_sizes", sizes)
    parts = [{"by_status": {"RUNNING": 3, "COMPLETED": 4}, "partitions": [0, 2]},
             {"by_status": {"RUNNING": 1, "FAILED": 2}, "partitions": [1]}]
    body = await stats.merge_stats(web=None, parts=parts, request=None)
    assert body["jobs"]["by_status"]["RUNNING"] == 4 and body["jobs"]["by_status"]["COMPLETED"] == 4
    assert body["jobs"]["by_status"]["FAILED"] == 2 and body["jobs"]["total"] == 10
    assert body["jobs"]["partitions"] == [0, 1, 2] and body["dlq_total"] == 3


# -- metrics ---------------------------------------------------------------------------------------
def _rollups(n_partitions: int = 20) -> dict[str, dict[str, Any]]:
    from app.core.metrics_math import add_sample, window_key

    rng = random.Random(11)
    found: dict[str, dict[str, Any]] = {}
    for _ in range(2000):
        partition, start = rng.randrange(n_partitions), 60_000 * rng.randrange(30)
        scope, name = rng.choice([("cluster", "frontera"), ("cluster", "ls6"), ("node", "c001"), ("node", "c002")])
        key = window_key(partition=partition, window="1m", scope=scope, name=name, start_ms=start)
        values = {m: rng.uniform(0, 100) / 3 for m in ("cpu_pct", "gpu_pct", "memory_gb", "io_mb_s")}
        found[key] = add_sample(found.get(key), values=values)
    return found


def _by_partition(items: dict[str, Any], members: int, sep: str = "|") -> list[frozenset[int]]:
    partitions = sorted({int(k.split(sep, 1)[0]) for k in items})
    return [frozenset(p for p in partitions if p % members == m) for m in range(members)]


@pytest.mark.parametrize("members", [2, 3, 7])
def test_cluster_windows_gathered_equal_one_workers_exactly(monkeypatch, members):
    import app.web.metrics as metrics

    rollups = _rollups()
    monkeypatch.setattr(metrics, "metric_windows", rollups)
    whole = metrics.merge_cluster(web=None, request=None, parts=[
        {"window": "1m", "limit": 8, "partitions": list(range(20)),
         "rollups": metrics.window_part(window="1m", limit=8, partitions=None)}])
    parts = [{"window": "1m", "limit": 8, "partitions": sorted(held),
              "rollups": metrics.window_part(window="1m", limit=8, partitions=held)}
             for held in _by_partition(rollups, members)]
    assert sum(len(p["rollups"]) for p in parts) < len(rollups)  # each part sends its newest 8 only
    gathered = metrics.merge_cluster(web=None, request=None, parts=parts)
    assert gathered == whole and len(whole["windows"]) == 8 and whole["partitions"] == list(range(20))


def test_slow_jobs_are_re_ranked_and_gpus_take_the_newest_sample(monkeypatch):
    import app.web.metrics as metrics

    parts = [{"limit": 3, "partitions": [0], "jobs": [{"job_id": "a", "execution_time_s": 9.0},
                                                       {"job_id": "b", "execution_time_s": 5.0}]},
             {"limit": 3, "partitions": [1], "jobs": [{"job_id": "c", "execution_time_s": 7.0},
                                                       {"job_id": "d", "execution_time_s": 5.0}]}]
    body = metrics.merge_slow(web=None, request=None, parts=parts)
    assert [j["job_id"] for j in body["jobs"]] == ["a", "c", "b"] and body["partitions"] == [0, 1]
    sample = {"node": "c001", "gpu_id": 0, "gpu_pct": 10, "job_id": "j1", "at_ms": 1000}
    gpus = metrics.merge_gpus(web=None, request=None, parts=[
        {"partitions": [0], "samples": {"0|c001|0": sample}},
        {"partitions": [1], "samples": {"1|c001|0": {**sample, "gpu_pct": 90, "job_id": "j2", "at_ms": 2000},
                                        "1|c002|1": {**sample, "node": "c002", "gpu_id": 1}}}])
    assert [(g["node"], g["gpu_pct"]) for g in gpus["gpus"]] == [("c001", 90), ("c002", 10)]


@pytest.mark.parametrize("members", [2, 3])
def test_runtime_statistics_gathered_equal_one_workers_exactly(members):
    import app.web.metrics as metrics
    from app.core.metrics_math import RUNTIME_BUCKETS, bucket_of, welford_add

    rng = random.Random(5)
    states: dict[str, dict[str, Any]] = {}
    for _ in range(500):
        key = f"{rng.randrange(10)}|{rng.choice(['sim', 'train', 'viz'])}"
        x = rng.uniform(1, 500) / 7
        old = states.get(key) or {"n": 0, "mean": 0.0, "m2": 0.0, "min": None, "max": None,
                                  "buckets": [0] * len(RUNTIME_BUCKETS)}
        new = {**old, **welford_add(old, x=x), "min": x if old["min"] is None else min(old["min"], x),
               "max": x if old["max"] is None else max(old["max"], x), "buckets": list(old["buckets"])}
        new["buckets"][bucket_of(seconds=x)] += 1
        states[key] = new
    whole = metrics.merge_runtimes(web=None, request=None, parts=[{"states": states, "partitions": list(range(10))}])
    parts = [{"states": {k: v for k, v in states.items() if int(k.split("|")[0]) in held}, "partitions": sorted(held)}
             for held in _by_partition(states, members)]
    gathered = metrics.merge_runtimes(web=None, request=None, parts=parts)
    assert gathered == whole and sum(t["count"] for t in whole["job_types"]) == 500


def test_actor_records_merge_by_time_and_404_when_none():
    from app.web.audit import merge_actor_records

    class _Web:
        def json(self, body, status=200):  # noqa: ANN001, ANN202
            return (status, body)

    record = {"at": "2026-01-01T00:00:02Z", "partition": 3, "seq": 1}
    body = merge_actor_records(web=_Web(), request=None, parts=[
        {"actor": "ops", "records": [record]},
        {"actor": "ops", "records": [{**record, "at": "2026-01-01T00:00:01Z", "partition": 0}]}])
    assert body["count"] == 2 and [r["partition"] for r in body["records"]] == [0, 3]
    assert merge_actor_records(web=_Web(), request=None, parts=[{"actor": "x", "records": []}])[0] == 404


def test_table_dumps_merge_in_order_up_to_the_limit():
    from app.web.tables import merge_dumps

    body = merge_dumps(web=None, request=None, parts=[{"lines": ['{"key": "a"}', '{"key": "c"}'], "limit": 2},
                                                      {"lines": ['{"key": "b"}'], "limit": 2}])
    assert body == {"lines": ['{"key": "a"}', '{"key": "b"}']}
