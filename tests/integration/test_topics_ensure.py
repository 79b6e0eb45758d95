"""`cosmic topics ensure | describe` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.core.settings import PROJECT_ROOT
from app.core.topic_specs import all_topic_specs
from app.ops.topic_admin import describe_live, ensure_topics


def _cosmic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.ops.cli", *args], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )


def test_ensure_creates_everything_then_changes_nothing(stack, uid):
    env = {**os.environ, "COSMIC_TOPIC_PREFIX": f"{uid}-"}
    first = _cosmic("topics", "ensure", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{len(all_topic_specs())} created, 0 with drift" in first.stdout
    second = _cosmic("topics", "ensure", env=env)
    assert second.returncode == 0
    assert "0 created, 0 with drift" in second.stdout
    assert "nothing to change" in second.stdout
    described = _cosmic("topics", "describe", env=env)
    assert described.returncode == 0
    assert f"{uid}-job-metrics" in described.stdout and "partitions=20" in described.stdout


async def test_live_topics_match_the_spec(stack, uid):
    prefix = f"{uid}-"
    await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=prefix)
    live = {r.name: r for r in await describe_live(bootstrap=stack.kafka_bootstrap, prefix=prefix)}
    for spec in all_topic_specs():
        report = live[prefix + spec.name]
        assert report.partitions == spec.partitions
        assert report.replication_factor == 1
        for key, value in spec.configs().items():
            assert report.configs[key] == value, (spec.name, key)


async def test_drift_is_reported_and_never_repaired_destructively(stack, uid):
    prefix = f"{uid}-"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}notifications", 2, 1, topic_configs={"retention.ms": "1000"})]
        )
    finally:
        await admin.close()
    reports = {r.name: r for r in await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=prefix)}
    drift = reports[f"{prefix}notifications"].drift
    assert any("partitions 2 (spec 5)" in d for d in drift)
    assert any("retention.ms=1000" in d for d in drift)
    assert not reports[f"{prefix}notifications"].created
    live = {r.name: r for r in await describe_live(bootstrap=stack.kafka_bootstrap, prefix=prefix)}
    assert live[f"{prefix}notifications"].partitions == 2  # untouched
    assert live[f"{prefix}notifications"].configs["retention.ms"] == "1000"


async def test_created_topics_are_served_when_ensure_returns(stack, uid):
    """Offset requests for every new partition succeed at once: a worker started right after
    ``ensure_topics`` never waits on NotLeaderForPartition (Faust pauses on it, seconds of a
    fresh worker's start-up)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.offset import OffsetRequest

    prefix = f"{uid}-"
    reports = await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=prefix)
    assert all(r.created for r in reports)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    client = AIOKafkaClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    await client.bootstrap()
    try:
        by_leader: dict[int, dict[str, list[int]]] = {}
        for topic in await admin.describe_topics([r.name for r in reports]):
            for partition in topic["partitions"]:
                by_leader.setdefault(partition["leader"], {}).setdefault(topic["topic"], []).append(partition["partition"])
        errors = []
        asked = 0
        for leader, topics in by_leader.items():
            request = OffsetRequest(-1, 0, [(t, [(p, -1) for p in parts]) for t, parts in topics.items()])
            response = await client.send(leader, request)
            for topic, partitions in response.topics:
                for partition, error_code, *_offset in partitions:
                    asked += 1
                    if error_code:
                        errors.append((topic, partition, error_code))
        assert asked == sum(spec.partitions for spec in all_topic_specs())
        assert errors == []
    finally:
        await client.close()
        await admin.close()
