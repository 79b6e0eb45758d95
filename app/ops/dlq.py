"""Inspect and re-drive the Kafka dead-letter topics (``cosmic dlq list|show|redrive``).

A dead letter keeps the original key and value bytes; its ``dlq.*`` headers say why and
where it came from (see :mod:`app.worker.streams`). Re-driving produces the original record back
to its source topic (``dlq.topic``) with a ``dlq.redriven_from`` header, and remembers its
progress in a consumer group per dead-letter topic and reason filter, so a record is
re-driven once.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.core.errors import CosmicError, EventDecodeError
from app.core.settings import Settings
from app.core.topic_specs import DLQ_SUFFIX, all_topic_specs, unprefixed
from app.ops.topic_reader import read_assigned, topic_partitions


class DlqError(CosmicError):
    pass


def dlq_topics(*, settings: Settings) -> list[str]:
    return [settings.topic_prefix + s.name for s in all_topic_specs() if s.name.endswith(DLQ_SUFFIX)]


def resolve(*, settings: Settings, topic: str) -> str:
    """``job-lifecycle``, ``job-lifecycle.dlq`` or the prefixed name → the prefixed DLQ topic."""
    name = topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX
    if not name.startswith(settings.topic_prefix):
        name = settings.topic_prefix + name
    if name not in dlq_topics(settings=settings):
        raise DlqError(f"unknown dead-letter topic {topic!r}; known: {', '.join(dlq_topics(settings=settings))}")
    return name


async def _read(*, settings: Settings, topic: str, group: str | None = None):  # noqa: ANN202
    """(started consumer, records): from the group's position (or the beginning) to the end."""
    partitions = await topic_partitions(bootstrap=settings.kafka_bootstrap, topic=topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records = await read_assigned(consumer=consumer, topic=topic, partitions=partitions,
                                      from_beginning=group is None)
        return consumer, records
    except BaseException:
        await consumer.stop()
        raise


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or ())}


def describe(record: Any, *, codecs: Any | None = None, source_topic: str | None = None) -> dict[str, Any]:
    headers = _headers(record)
    entry: dict[str, Any] = {
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "key": (record.key or b"").decode(errors="replace"),
        "reason": headers.get("dlq.reason"),
        "error_class": headers.get("dlq.error_class"),
        "error_message": headers.get("dlq.error_message"),
        "origin": {
            "topic": headers.get("dlq.topic"), "partition": headers.get("dlq.partition"),
            "offset": headers.get("dlq.offset"), "timestamp": headers.get("dlq.timestamp"),
        },
        "attempts": headers.get("dlq.attempts"),
    }
    event = None
    if codecs is not None and source_topic is not None and record.value:
        try:
            from app.core.validation import event_to_json

            event = event_to_json(codecs.for_topic(source_topic).decode(record.value))
        except (EventDecodeError, KeyError):
            event = None
    entry["event"] = event
    if event is None:
        entry["value_base64"] = base64.b64encode(record.value or b"").decode()
    return entry


def _source_name(*, settings: Settings, dlq_topic: str) -> str:
    return unprefixed(topic=dlq_topic, prefix=settings.topic_prefix)[: -len(DLQ_SUFFIX)]


async def summary(*, settings: Settings) -> list[dict[str, Any]]:
    """Per dead-letter topic: how many records, by reason."""
    out = []
    for topic in dlq_topics(settings=settings):
        consumer, records = await _read(settings=settings, topic=topic)
        await consumer.stop()
        reasons = Counter(_headers(r).get("dlq.reason", "?") for r in records)
        out.append({"topic": topic, "records": len(records), "by_reason": dict(sorted(reasons.items()))})
    return out


async def show(*, settings: Settings, topic: str, reason: str | None = None, limit: int = 20) -> list[dict]:
    from app.core.codecs import Codecs

    name = resolve(settings=settings, topic=topic)
    consumer, records = await _read(settings=settings, topic=name)
    await consumer.stop()
    codecs = Codecs(settings=settings)
    source = _source_name(settings=settings, dlq_topic=name)
    out = []
    for record in records:
        if reason and _headers(record).get("dlq.reason") != reason:
            continue
        out.append(describe(record, codecs=codecs, source_topic=source))
        if len(out) >= limit:
            break
    return out


async def redrive(
    *, settings: Settings, topic: str, reason: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Produce dead letters back to their source topic; each at most once per filter."""
    name = resolve(settings=settings, topic=topic)
    group = f"{settings.app_id}-dlq-redrive-{name}-{reason or 'all'}"
    consumer, records = await _read(settings=settings, topic=name, group=group)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    counts: Counter[str] = Counter()
    try:
        await producer.start()
        for record in records:
            headers = _headers(record)
            why = headers.get("dlq.reason", "?")
            if reason and why != reason:
                continue
            counts[why] += 1
            if dry_run:
                continue
            target = headers.get("dlq.topic")
            if not target:
                raise DlqError(f"{name}@{record.partition}:{record.offset} has no dlq.topic header")
            kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")]
            kept.append(("dlq.redriven_from", f"{name}:{record.partition}:{record.offset}".encode()))
            await producer.send_and_wait(target, record.value, key=record.key, headers=kept)
        if not dry_run and records:
            last: dict[TopicPartition, int] = {}
            for record in records:
                last[TopicPartition(record.topic, record.partition)] = record.offset + 1
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in last.items()})
    finally:
        await producer.stop()
        await consumer.stop()
    return {"topic": name, "redriven": 0 if dry_run else sum(counts.values()), "matched": sum(counts.values()),
            "by_reason": dict(counts), "dry_run": dry_run}
