"""Kafka faults mid-stream: every event Kafka acknowledged is consumed.

1. The local single broker SIGKILLed and restarted while a worker consumes a paced stream
   (the client re-sends what was not acknowledged, as the platform's API would).
2. A three-broker KRaft cluster (replication factor 3, min.insync.replicas=2, idempotent
   producer with acks=all) started beside the local stack: the topic spec is created on it
   with replication factor 3, a worker consumes it, and the leader of the busiest
   job-lifecycle partition is SIGKILLed mid-stream.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.core.codecs import Codecs
from app.core.settings import Settings
from app.core.topic_specs import all_topic_specs
from app.ops.stack.kafka import KafkaCluster
from app.ops.stack.manager import StackManager
from app.ops.topic_admin import ensure_topics
from app.ops.topic_reader import read_topic
from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from fault_support import account_job_states, publish_paced
from support.polling import wait_until_async
from support.workers import wait_for_final_states

JOBS = 300
RATE = 1_000.0


async def _lifecycle_ids(*, settings: Settings) -> list[str]:
    codec = Codecs(settings=settings).for_topic("job-lifecycle")
    records = await read_topic(bootstrap=settings.kafka_bootstrap,
                               topic=f"{settings.topic_prefix}job-lifecycle", timeout=120)
    return [codec.decode(r.value).event_id for r in records]


async def test_single_broker_killed_and_restarted_mid_stream(stack, worker_factory, worker_env, uid, report):  # noqa: ANN001
    settings = Settings.from_env(environ=worker_env)
    workload = build_workload(jobs=JOBS, seed=21, prefix=f"job-{uid}")
    row = report(scenario="kafka: single broker SIGKILL + restart", events_in=len(workload.deliveries))
    kafka = StackManager(settings=stack.settings).kafka(brokers=1)
    worker = await asyncio.to_thread(worker_factory(COSMIC_RABBITMQ_BRIDGE_ENABLED="false").start)
    acked: list[str] = []
    down_for = 0.0
    try:
        async with EventPublisher(settings=settings) as publisher:
            stream = asyncio.create_task(publish_paced(
                publisher=publisher, events=workload.deliveries, rate=RATE / 4, acked=acked,
                retry_until=time.monotonic() + 240,
            ))
            await wait_until_async(lambda: len(acked) >= len(workload.deliveries) // 3 or stream.done(),
                                   timeout=600, interval=0.05, what="a third of the stream acknowledged", fail=False)
            assert not stream.done(), "the stream ended before the fault; the test proves nothing"
            killed_at = time.monotonic()
            await asyncio.to_thread(kafka.kill_node, node_id=1)
            await asyncio.sleep(5)
            await asyncio.to_thread(kafka.start, timeout=180)
            down_for = time.monotonic() - killed_at
            await stream
    finally:
        # the rest of the session needs the stack: make sure all of it runs whatever happened
        manager = StackManager(settings=stack.settings, echo=lambda line: print(f"[stack] {line}"))
        if not all(s.healthy for s in await asyncio.to_thread(manager.status)):
            await asyncio.to_thread(manager.up, brokers=1, timeout=180)
    assert sorted(acked) == sorted(e.event_id for e in workload.deliveries)
    states = await asyncio.to_thread(wait_for_final_states, worker=worker, workload=workload, timeout=420)
    logged = await _lifecycle_ids(settings=settings)
    row.sink(name="job-lifecycle log (acked ids)", expected=set(acked), seen=list(set(logged)))
    account_job_states(row=row, workload=workload, states=states)
    row.notes["broker down (kill → listening again)"] = f"{down_for:.1f} s"
    for name, counts in row.sinks.items():
        assert counts["lost"] == 0 and counts["unexpected"] == 0, f"{name}: {counts}"


def _free_base_port() -> int:
    """A base port with base..base+21 free (three nodes, client + controller each)."""
    for base in range(21000, 25000, 100):  # below the ephemeral range (see free_port)
        ports = [base + 10 * i + j for i in range(3) for j in range(2)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range for the three-broker cluster")


@pytest.fixture
def three_brokers(stack, tmp_path: Path):  # noqa: ANN001
    """A three-broker KRaft cluster beside the local stack (its jars shared), stopped after."""
    shared = StackManager(settings=stack.settings).kafka(brokers=1)
    root = tmp_path / "kafka3"
    root.mkdir()
    os.symlink(shared.libs_dir, root / shared.libs_dir.name)
    cluster = KafkaCluster(root=root, host="127.0.0.1", base_port=_free_base_port(), brokers=3)
    cluster.prepare()
    try:
        cluster.start(timeout=240)
        yield cluster
    finally:
        # thrown away with its data: no controlled shutdown needed
        for node in cluster.nodes:
            cluster.kill_node(node_id=node.node_id)
        shutil.rmtree(root, ignore_errors=True)


async def _busiest_partition_leader(*, bootstrap: str, topic: str) -> tuple[int, int]:
    """(partition, leader node id) of the partition of ``topic`` holding the most records."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = (await admin.describe_topics([topic]))[0]
    finally:
        await admin.close()
    leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in leaders])
    finally:
        await consumer.stop()
    partition = max(ends, key=lambda tp: ends[tp]).partition
    return partition, leaders[partition]


async def test_three_brokers_leader_killed_mid_stream(three_brokers, worker_factory, worker_env, uid, report):  # noqa: ANN001
    cluster = three_brokers
    env = {**worker_env, "COSMIC_KAFKA_BOOTSTRAP": cluster.bootstrap, "COSMIC_REPLICATION_FACTOR": "3",
           "COSMIC_RABBITMQ_BRIDGE_ENABLED": "false"}
    settings = Settings.from_env(environ=env)

    # The production topic spec, replication factor 3, on the cluster.
    reports = await ensure_topics(bootstrap=cluster.bootstrap, replication_factor=3, prefix=settings.topic_prefix)
    assert len(reports) == len(all_topic_specs())
    for topic in reports:
        assert topic.replication_factor == 3 and not topic.drift, topic
        assert topic.configs.get("min.insync.replicas") == "2", topic

    workload = build_workload(jobs=JOBS, seed=22, prefix=f"job-{uid}")
    row = report(scenario="kafka: 3 brokers, busiest leader SIGKILL", events_in=len(workload.deliveries))
    worker = await asyncio.to_thread(worker_factory(**{k: v for k, v in env.items() if k.startswith("COSMIC_")}).start)
    acked: list[str] = []
    topic = f"{settings.topic_prefix}job-lifecycle"
    async with EventPublisher(settings=settings) as publisher:
        stream = asyncio.create_task(publish_paced(
            publisher=publisher, events=workload.deliveries, rate=RATE / 4, acked=acked,
            retry_until=time.monotonic() + 240,
        ))
        await wait_until_async(lambda: len(acked) >= len(workload.deliveries) // 3 or stream.done(),
                               timeout=600, interval=0.05, what="a third of the stream acknowledged", fail=False)
        assert not stream.done(), "the stream ended before the fault; the test proves nothing"
        partition, leader = await _busiest_partition_leader(bootstrap=cluster.bootstrap, topic=topic)
        acked_before_kill = len(acked)
        await asyncio.to_thread(cluster.kill_node, node_id=leader)
        await stream
    assert sorted(acked) == sorted(e.event_id for e in workload.deliveries)

    states = await asyncio.to_thread(wait_for_final_states, worker=worker, workload=workload, timeout=420)
    logged = await _lifecycle_ids(settings=settings)
    row.sink(name="job-lifecycle log (acked ids)", expected=set(acked), seen=list(set(logged)))
    account_job_states(row=row, workload=workload, states=states)
    row.notes["killed"] = (f"node {leader}, leader of {topic.split('-', 1)[1]}[{partition}], "
                           f"after {acked_before_kill} acknowledged events")
    for name, counts in row.sinks.items():
        assert counts["lost"] == 0 and counts["unexpected"] == 0, f"{name}: {counts}"
