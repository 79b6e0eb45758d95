"""Read a Kafka topic from a position to its current end offsets (a snapshot of the log).

Used by the tools that look at topics from outside a worker: ``cosmic dlq``, ``cosmic
rebuild``, ``cosmic audit verify``, and the tests. Records come back per partition in log
order (partitions in ascending order), as aiokafka ``ConsumerRecord`` objects.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.core.errors import CosmicError


class TopicReadError(CosmicError):
    """A topic could not be described or read to its end."""


async def topic_partitions(*, bootstrap: str, topic: str, timeout: float = 60.0) -> list[int]:
    """The partitions of ``topic`` (TopicReadError when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        if topic not in set(await admin.list_topics()):
            raise TopicReadError(f"topic {topic} does not exist")
        described = await admin.describe_topics([topic])
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        raise TopicReadError(f"cannot describe {topic} on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for t in described if t["topic"] == topic for p in t.get("partitions") or ())
    if not partitions:
        raise TopicReadError(f"topic {topic} has no partitions in the cluster's metadata")
    return partitions


async def read_assigned(
    *, consumer: AIOKafkaConsumer, topic: str, partitions: list[int], from_beginning: bool = True,
    timeout: float = 60.0,
) -> list[Any]:
    """Assign ``partitions`` to a started ``consumer`` and read each to its end offset
    (from the beginning, or from the consumer group's committed position)."""
    tps = [TopicPartition(topic, p) for p in partitions]
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        records: dict[int, list[Any]] = {p: [] for p in partitions}
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TopicReadError(f"timed out reading {topic} (partitions {sorted(tp.partition for tp in pending)})")
            for tp, messages in (await consumer.getmany(*pending, timeout_ms=500)).items():
                records[tp.partition].extend(m for m in messages if m.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return [r for p in partitions for r in records[p]]
    except KafkaError as exc:
        raise TopicReadError(f"reading {topic} failed: {exc!r}") from exc


async def read_topic(
    *, bootstrap: str, topic: str, timeout: float = 60.0, partitions: list[int] | None = None
) -> list[Any]:
    """Every record of ``topic`` (of ``partitions``, default all) up to its current end offsets."""
    if partitions is None:
        partitions = await topic_partitions(bootstrap=bootstrap, topic=topic, timeout=timeout)
    # auto_offset_reset="earliest": a reset racing seek_to_beginning must not jump to the end
    # (with aiokafka's default "latest" the read was seen to return nothing).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        raise TopicReadError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from exc
    try:
        return await read_assigned(consumer=consumer, topic=topic, partitions=partitions, timeout=timeout)
    finally:
        await consumer.stop()
