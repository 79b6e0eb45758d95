"""job lifecycles → real worker → audit-trail → record_audit_trail: chain, indexes, verify, tamper."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid

from aiokafka import AIOKafkaProducer

from app.core.audit_chain import (
    block_key, changelog_topic_name, entries_of_blocks, entry_key, fold_changelog, parse_entry_key,
)
from app.core.ids import derived_id
from app.core.models import AuditRecord
from app.core.settings import PROJECT_ROOT, Settings
from app.core.timeutil import utc_now
from app.ops.cli_audit import read_changelog
from app.ops.demo import lifecycle_events
from app.ops.topic_reader import read_topic
from app.worker.publisher import EventPublisher
from support.polling import wait_until, wait_until_async

USERS = ("ada", "grace", "linus")


def _lifecycles(jobs: list[str], *, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    return {
        job_id: lifecycle_events(job_id=job_id, user_id=USERS[i % len(USERS)], rng=rng, outcome="COMPLETED")
        for i, job_id in enumerate(jobs)
    }


async def _publish(env: dict[str, str], events: list) -> None:  # noqa: ANN001
    async with EventPublisher(settings=Settings.from_env(environ=env)) as publisher:
        await publisher.publish_many(events)


def _wait_for_resources(worker, expected: dict[str, int], *, timeout: float = 120.0) -> dict[str, dict]:  # noqa: ANN001
    """GET /api/audit/resources/{id} until each resource lists ``expected[id]`` records."""
    bodies: dict[str, dict] = {}

    def complete() -> dict[str, dict] | None:
        for resource_id, count in expected.items():
            if bodies.get(resource_id, {}).get("count") == count:
                continue
            status, body = worker.get_json(f"/api/audit/resources/{resource_id}", operator=True)
            if status == 200:
                bodies[resource_id] = body
        return bodies if all(bodies.get(r, {}).get("count") == n for r, n in expected.items()) else None

    def short(_last: object) -> str:
        counts = {r: bodies.get(r, {}).get("count") for r, n in expected.items() if bodies.get(r, {}).get("count") != n}
        return f"resource indexes incomplete: {dict(list(counts.items())[:5])}"

    return wait_until(complete, timeout=timeout, what="every resource's audit records", describe=short,
                      diagnostics=worker.log_tail)


def _verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.ops.cli", "audit", "verify", *args], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )


def _verify_until_total(env: dict[str, str], total: int, *, timeout: float = 60.0) -> dict:
    """Run verify --json until the changelog holds ``total`` entries (the producer flushes lazily)."""

    def verified() -> dict:
        out = _verify(env, "--json")
        assert out.returncode in (0, 1), out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert out.returncode == 0 and report["ok"], out.stdout
        return report

    return wait_until(verified, timeout=timeout, interval=1.0, what=f"{total} chain entries",
                      accept=lambda report: report["total"] >= total, fail=False)


async def _dead_letters(env: dict[str, str], topic: str) -> list[dict[str, str]]:
    """Headers of every record on ``topic`` (a dead-letter topic), as text."""
    settings = Settings.from_env(environ=env)
    records = await read_topic(bootstrap=settings.kafka_bootstrap, topic=topic)
    return [{k: v.decode() for k, v in r.headers} for r in records]


def _manual_audit(resource_id: str) -> AuditRecord:
    return AuditRecord(
        event_id=str(uuid.uuid4()), event_type="AuditRecord", timestamp=utc_now(), correlation_id=str(uuid.uuid4()),
        user_id="ops", schema_version=1, action="dataset.delete", actor="ops", resource_type="dataset",
        resource_id=resource_id, outcome="DENIED", before=None, after=None, source_event_id=None,
    )


async def test_audit_chain_indexes_verify_and_detect_tampering(worker_factory, worker_env, uid):
    jobs = [f"job-{uid}-{i}" for i in range(30)]
    lifecycles = _lifecycles(jobs, seed=21)
    worker = worker_factory().start()
    manual = _manual_audit(f"dataset-{uid}")
    await _publish(worker_env, [e for events in lifecycles.values() for e in events])
    await _publish(worker_env, [manual])
    await _publish(worker_env, [manual])  # the same event_id again: a duplicate

    expected = {job_id: len(events) for job_id, events in lifecycles.items()} | {manual.resource_id: 1}
    bodies = await asyncio.to_thread(_wait_for_resources, worker, expected)

    # each job's index lists exactly its transitions, once each, in order
    entries_seen: set[tuple[int, int]] = set()
    for job_id, events in lifecycles.items():
        records = bodies[job_id]["records"]
        assert [r["event_id"] for r in records] == [derived_id(e.event_id, "audit") for e in events]
        assert [r["source_event_id"] for r in records] == [e.event_id for e in events]
        assert {r["action"] for r in records} == {"job.transition"} and {r["resource_id"] for r in records} == {job_id}
        assert len({r["partition"] for r in records}) == 1  # a resource's records share its partition
        entries_seen |= {(r["partition"], r["seq"]) for r in records}
    assert len(entries_seen) == 120
    dataset = bodies[manual.resource_id]["records"]
    assert [(r["event_id"], r["actor"], r["outcome"]) for r in dataset] == [(manual.event_id, "ops", "DENIED")]

    # the actor index: the union over partitions
    status, body = await asyncio.to_thread(worker.get_json, "/api/audit/actors/ada", operator=True)
    assert status == 200 and body["count"] == 10 * 4
    ada_jobs = {job_id for i, job_id in enumerate(jobs) if i % 3 == 0}
    assert {r["resource_id"] for r in body["records"]} == ada_jobs
    assert (await asyncio.to_thread(worker.get_json, "/api/audit/actors/nobody", operator=True))[0] == 404
    assert (await asyncio.to_thread(worker.get_json, f"/api/audit/resources/job-{uid}-none", operator=True))[0] == 404

    # the duplicate was dropped and counted: not chained, not dead-lettered
    await wait_until_async(lambda: asyncio.to_thread(worker.metric, "cosmic_duplicates_dropped_total",
                                                     topic="audit-trail"),
                           timeout=30, what="a dropped duplicate counted", fail=False)
    assert await asyncio.to_thread(worker.metric, "cosmic_duplicates_dropped_total", topic="audit-trail") == 1
    assert await _dead_letters(worker_env, f"{uid}-audit-trail.dlq") == []

    # cosmic audit verify: intact, 121 entries, partitions numbered from seq 0 without gaps
    report = await asyncio.to_thread(_verify_until_total, worker_env, 121)
    assert report["ok"] and report["total"] == 121 and report["first_break"] is None
    assert report["topic"] == f"cosmic-test-{uid}-audit_chain-changelog"
    assert [p["partition"] for p in report["partitions"]] == [0, 1, 2, 3, 4]
    for part in report["partitions"]:
        assert part["verified"] == part["entries"] and part["head_seq"] == part["entries"] - 1
        assert {(part["partition"], s) for s in range(part["entries"])} <= entries_seen | {
            (r["partition"], r["seq"]) for r in dataset
        }
    text = await asyncio.to_thread(_verify, worker_env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "OK" in text.stdout.splitlines()[0] and "total: 121 entries in 5 partitions" in text.stdout

    # TAMPER: somebody rewrites one stored audit record in the changelog topic (entry 2 of the
    # fullest partition, in its block: the table stores BLOCK_SIZE entries per value)
    topic = changelog_topic_name(worker_env["COSMIC_APP_ID"])
    settings = Settings.from_env(environ=worker_env)
    _, records = await read_changelog(bootstrap=settings.kafka_bootstrap, topic=topic)
    table = fold_changelog(records)
    entries = entries_of_blocks(table)
    partition = max(range(5), key=lambda p: sum(1 for k in entries if parse_entry_key(k)[0] == p))
    key = block_key(partition, 2)
    block = table[key]
    victim = block["entries"][2]
    assert victim == entries[entry_key(partition, 2)] and victim["seq"] == 2
    victim["record"]["actor"] = "mallory"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(block).encode(), key=key.encode(), partition=partition)
    finally:
        await producer.stop()

    broken = await asyncio.to_thread(_verify, worker_env, "--json")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    report = json.loads(broken.stdout)
    first = report["first_break"]
    assert not report["ok"] and [b["partition"] for b in report["breaks"]] == [partition]
    assert (first["partition"], first["seq"], first["kind"]) == (partition, 2, "hash-mismatch")
    assert first["event_id"] == victim["event_id"] and first["found"] == victim["hash"]
    text = await asyncio.to_thread(_verify, worker_env)
    assert text.returncode == 1
    assert f"FIRST BREAK: partition {partition} seq 2 (event {victim['event_id']})" in text.stdout
