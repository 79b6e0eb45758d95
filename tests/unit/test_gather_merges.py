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
