"""`cosmic dlq list|show|redrive` and `cosmic tables|table` against a real worker."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import urllib.error
import urllib.request

from aiokafka import AIOKafkaProducer

from app.core.settings import PROJECT_ROOT, Settings
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from support.polling import wait_until


def _cosmic(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.ops.cli", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


async def test_dead_letters_can_be_listed_shown_and_redriven_once(worker_factory, worker_env, uid):
    settings = Settings.from_env(environ=worker_env)
    worker = await asyncio.to_thread(worker_factory().start)
    events = lifecycle_events(job_id=f"job-{uid}", user_id="gus", rng=random.Random(8), outcome="COMPLETED")
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish(events[1])  # JobQueued of a job not submitted yet → unknown-job
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(f"{uid}-job-lifecycle", b"\x00\x00\x00\x00\x07garbage", key=f"job-{uid}".encode())
    await producer.send_and_wait(f"{uid}-job-lifecycle", b"plain text", key=f"job-{uid}".encode())
    await producer.stop()

    def listed() -> dict:
        out = _cosmic(worker_env, "dlq", "list")
        assert out.returncode == 0, out.stderr
        return {line.split()[0]: line for line in out.stdout.splitlines()}

    await asyncio.to_thread(wait_until, lambda: " 3 " in listed().get(f"{uid}-job-lifecycle.dlq", ""), timeout=60,
                            what="3 dead letters listed")
    line = listed()[f"{uid}-job-lifecycle.dlq"]
    assert "unknown-job=1" in line and "undecodable:not-framed=1" in line and "undecodable:unknown-schema-id=1" in line

    shown = _cosmic(worker_env, "dlq", "show", "job-lifecycle")
    entries = [json.loads(x) for x in shown.stdout.splitlines()]
    unknown = next(e for e in entries if e["reason"] == "unknown-job")
    assert unknown["event"]["event_id"] == events[1].event_id and unknown["origin"]["topic"] == f"{uid}-job-lifecycle"
    garbage = next(e for e in entries if e["reason"] == "undecodable:not-framed")
    assert garbage["event"] is None and garbage["value_base64"]

    # The submit arrives late; re-driving the unknown-job dead letter now applies it.
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish(events[0])
    await asyncio.to_thread(wait_until, lambda: worker.get_json(f"/api/jobs/job-{uid}", operator=True)[0] == 200,
                            timeout=60, what="the job known")
    redriven = json.loads(_cosmic(worker_env, "dlq", "redrive", "job-lifecycle", "--reason", "unknown-job").stdout)
    assert redriven["redriven"] == 1
    await asyncio.to_thread(wait_until, lambda: worker.get_json(f"/api/jobs/job-{uid}", operator=True)[1].get("status") == "QUEUED",
                            timeout=60, what="the job QUEUED")
    again = json.loads(_cosmic(worker_env, "dlq", "redrive", "job-lifecycle", "--reason", "unknown-job").stdout)
    assert again["redriven"] == 0, "a dead letter is re-driven once"


async def test_tables_online_need_an_operator_and_offline_read_the_files(worker_factory, worker_env, uid):
    settings = Settings.from_env(environ=worker_env)
    worker = await asyncio.to_thread(worker_factory().start)
    events = lifecycle_events(job_id=f"job-{uid}", user_id="hal", rng=random.Random(9), outcome="FAILED")
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(events)
    await asyncio.to_thread(wait_until, lambda: worker.get_json(f"/api/jobs/job-{uid}", operator=True)[1].get("status") == "FAILED",
                            timeout=60, what="the job FAILED")

    # Without a token, or with a non-operator token, table contents are refused.
    for headers, expected in (({}, 401), ({"Authorization": "Bearer nonsense"}, 401)):
        request = urllib.request.Request(f"{worker.base_url}/api/tables/job_state", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("table contents served without auth")
        except urllib.error.HTTPError as exc:
            assert exc.code == expected
    from app.core.auth import mint_token

    user_token = mint_token(settings=settings, sub="hal")
    request = urllib.request.Request(f"{worker.base_url}/api/tables/job_state",
                                     headers={"Authorization": f"Bearer {user_token}"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a non-operator read a table")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403

    tables = _cosmic(worker_env, "tables")
    assert tables.returncode == 0 and "(worker)" in tables.stdout
    assert {"job_state", "job_counts", "active_jobs", "audit_chain"} <= {l.split()[0] for l in tables.stdout.splitlines()}
    got = _cosmic(worker_env, "table", "get", "job_state", f"job-{uid}", "--mode", "online")
    assert got.returncode == 0 and json.loads(got.stdout)["value"]["status"] == "FAILED"
    dumped = _cosmic(worker_env, "table", "dump", "job_state", "--prefix", f"job-{uid}")
    assert [json.loads(l)["key"] for l in dumped.stdout.splitlines()] == [f"job-{uid}"]
    missing = _cosmic(worker_env, "table", "get", "job_state", "nope", "--mode", "online")
    assert missing.returncode == 1

    # Offline, against the stopped worker's data directory (read-only).
    worker.stop()
    offline = _cosmic(worker_env, "table", "get", "job_state", f"job-{uid}", "--mode", "offline")
    assert offline.returncode == 0 and json.loads(offline.stdout)["value"]["status"] == "FAILED"
    dumped = _cosmic(worker_env, "table", "dump", "job_counts", "--mode", "offline")
    counts = [json.loads(l)["value"]["counts"] for l in dumped.stdout.splitlines()]
    assert sum(c.get("FAILED", 0) for c in counts) == 1
    tables = _cosmic(worker_env, "tables", "--mode", "offline")
    assert "job_state" in tables.stdout and "(disk)" in tables.stdout
