"""Job queries and stats on a real worker: ``GET /api/jobs/{id}``, ``/api/jobs/{id}/events``,
``/api/jobs?status=&user_id=`` (paged) and ``/api/stats``, with operator and plain-user tokens."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request

from aiokafka import AIOKafkaProducer

from app.core.auth import mint_token
from app.core.settings import Settings
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from support.polling import wait_until


def _get(worker, path: str, token: str | None) -> tuple[int, object]:  # noqa: ANN001
    request = urllib.request.Request(f"{worker.base_url}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def test_job_queries_and_stats(worker_factory, worker_env, uid):
    worker = await asyncio.to_thread(worker_factory().start)
    settings = Settings.from_env(environ=worker_env)
    operator = mint_token(settings=settings, sub="ops", role="operator")
    ada, bob = mint_token(settings=settings, sub="ada"), mint_token(settings=settings, sub="bob")
    rng = random.Random(2)
    plan = {f"job-{uid}-a{i}": ("ada", "COMPLETED") for i in range(3)}
    plan.update({f"job-{uid}-b0": ("bob", "COMPLETED"), f"job-{uid}-b1": ("bob", "CANCELLED")})
    published = {job: lifecycle_events(job_id=job, user_id=user, rng=rng, outcome=outcome)
                 for job, (user, outcome) in plan.items()}
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many([e for events in published.values() for e in events])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:  # an undecodable record: dead-lettered, counted by /api/stats
        await producer.send_and_wait(settings.topic_prefix + "job-lifecycle", b"not avro", key=b"junk")
    finally:
        await producer.stop()

    final = {"COMPLETED", "CANCELLED"}
    await asyncio.to_thread(wait_until, lambda: all(
        (answer := _get(worker, f"/api/jobs/{job}", operator))[0] == 200 and answer[1]["status"] in final
        for job in plan), timeout=120, what="every job final")

    # one job: token required, owner or operator only (404 for someone else's)
    job_a = f"job-{uid}-a0"
    assert _get(worker, f"/api/jobs/{job_a}", None)[0] == 401
    status, body = _get(worker, f"/api/jobs/{job_a}", ada)
    assert status == 200 and body["status"] == "COMPLETED" and body["user_id"] == "ada"
    assert _get(worker, f"/api/jobs/{job_a}", bob) == (404, {"error": "job not found", "job_id": job_a})
    assert _get(worker, f"/api/jobs/job-{uid}-nope", operator)[0] == 404

    # history from the topic, in order
    status, body = _get(worker, f"/api/jobs/{job_a}/events", ada)
    assert status == 200 and body["count"] == 4 and not body["truncated"] and body["errors"] == []
    assert [e["event"]["event_id"] for e in body["events"]] == [e.event_id for e in published[job_a]]
    assert {e["partition"] for e in body["events"]} == {body["events"][0]["partition"]}
    assert _get(worker, f"/api/jobs/{job_a}/events", bob)[0] == 404
    assert _get(worker, f"/api/jobs/job-{uid}-nope/events", operator)[0] == 404
    assert _get(worker, f"/api/jobs/{job_a}/events", None)[0] == 401

    # lists: by status, by user, paged; plain users see only their own
    status, body = _get(worker, "/api/jobs?status=COMPLETED", operator)
    assert status == 200 and {j["job_id"] for j in body["jobs"]} == {j for j, (_, o) in plan.items() if o == "COMPLETED"}
    assert all("history" not in j and "parked" not in j for j in body["jobs"])
    seen, cursor, pages = [], "", 0
    while True:
        status, body = _get(worker, "/api/jobs?limit=2" + (f"&cursor={cursor}" if cursor else ""), operator)
        assert status == 200 and body["count"] <= 2
        seen += [j["job_id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(plan) and pages == 3
    status, body = _get(worker, "/api/jobs", bob)
    assert status == 200 and sorted(j["job_id"] for j in body["jobs"]) == [f"job-{uid}-b0", f"job-{uid}-b1"]
    status, body = _get(worker, "/api/jobs?status=CANCELLED&user_id=bob", operator)
    assert [j["job_id"] for j in body["jobs"]] == [f"job-{uid}-b1"]
    assert _get(worker, "/api/jobs?user_id=ada", bob)[0] == 403
    status, body = _get(worker, "/api/jobs?status=DONE", operator)
    assert status == 400 and body["field"] == "status"
    status, body = _get(worker, f"/api/jobs?cursor={_get(worker, '/api/jobs?limit=1', operator)[1]['next_cursor']}"
                                "&status=COMPLETED", operator)
    assert status == 400 and body["field"] == "cursor"
    assert _get(worker, "/api/jobs", None)[0] == 401

    # stats: counts by status and the dead letter (operators only)
    def stats_ready() -> bool:
        code, answer = _get(worker, "/api/stats", operator)
        return code == 200 and answer["dlq"]["job-lifecycle.dlq"] >= 1
    await asyncio.to_thread(wait_until, stats_ready, timeout=120, what="the dead letter in /api/stats")
    status, body = _get(worker, "/api/stats", operator)
    assert body["jobs"]["by_status"]["COMPLETED"] == 4 and body["jobs"]["by_status"]["CANCELLED"] == 1
    assert body["jobs"]["total"] == 5 and body["jobs"]["by_status"]["RUNNING"] == 0
    assert body["dlq"]["job-lifecycle.dlq"] == 1 and body["dlq_total"] >= 1
    assert set(body["dlq"]) >= {"job-lifecycle.dlq", "job-metrics.dlq", "audit-trail.dlq"}
    assert _get(worker, "/api/stats", ada)[0] == 403
