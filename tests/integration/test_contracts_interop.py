"""Our Avro bytes against clients nobody here wrote: confluent-kafka's Avro serde, and kcat."""

from __future__ import annotations

import asyncio
import random
import subprocess

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.core.codecs import Codecs
from app.core.schemas import topic_schema_text
from app.core.settings import Settings
from app.core.timeutil import utc_ms
from app.ops.demo import lifecycle_events
from app.ops.topic_admin import ensure_topics
from app.worker.publisher import EventPublisher
from support.polling import wait_until


def _settings(stack, uid: str) -> Settings:
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap, schema_registry_url=stack.registry_url, topic_prefix=f"{uid}-"
    )


def _consume_all(*, bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"interop-{topic}", "auto.offset.reset": "earliest",
         "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    messages = []

    def received() -> bool:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            messages.append(msg)
        return len(messages) >= count

    try:
        wait_until(received, timeout=timeout, interval=0, what=f"{count} messages of {topic}", fail=False)
    finally:
        consumer.close()
    return messages


async def test_confluent_avro_deserializer_reads_what_we_publish(stack, uid):
    settings = _settings(stack, uid)
    await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=settings.topic_prefix)
    rng = random.Random(3)
    events = []
    for outcome in ("COMPLETED", "FAILED", "CANCELLED"):
        events += lifecycle_events(job_id=f"job-{uid}-{outcome}", user_id="carol", rng=rng, outcome=outcome)
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(events)

    topic = f"{uid}-job-lifecycle"
    messages = await asyncio.to_thread(_consume_all, bootstrap=stack.kafka_bootstrap, topic=topic, count=len(events))
    assert len(messages) == len(events)
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": stack.registry_url}), return_record_name=True)
    by_id = {e.event_id: e for e in events}
    for msg in messages:
        name, record = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
        event = by_id[str(record["event_id"])]
        assert name == type(event)._options.namespace
        assert record["job_id"] == event.job_id == msg.key().decode()
        assert record["timestamp"] == event.timestamp
        assert msg.timestamp()[1] == utc_ms(event.timestamp)
        assert dict(msg.headers())["event_type"] == event.event_type.encode()
        if name.endswith("JobSubmitted"):
            assert record["resource_request"]["walltime"] == event.resource_request.walltime


async def test_our_codec_reads_what_confluent_avro_serializer_writes(stack, uid):
    settings = _settings(stack, uid)
    await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=settings.topic_prefix)
    topic = f"{uid}-job-lifecycle"
    serializer = AvroSerializer(
        SchemaRegistryClient({"url": stack.registry_url}), topic_schema_text("job-lifecycle"),
        conf={"auto.register.schemas": True},
    )
    events = lifecycle_events(job_id=f"job-{uid}", user_id="dave", rng=random.Random(4), outcome="COMPLETED")
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for event in events:
        rep = event.to_representation()
        body = {k: v.to_representation() if hasattr(v, "to_representation") else v for k, v in rep.items() if k != "__faust"}
        body = {k: {kk: vv for kk, vv in v.items() if kk != "__faust"} if isinstance(v, dict) else v for k, v in body.items()}
        body["-type"] = rep["__faust"]["ns"]  # fastavro's way to name the union branch
        producer.produce(topic, key=event.job_id, value=serializer(body, SerializationContext(topic, MessageField.VALUE)))
    producer.flush(30)

    messages = await asyncio.to_thread(_consume_all, bootstrap=stack.kafka_bootstrap, topic=topic, count=len(events))
    codec = Codecs(settings=settings).for_topic("job-lifecycle")
    decoded = sorted((codec.decode(m.value()) for m in messages), key=lambda e: e.timestamp)
    assert [type(e) for e in decoded] == [type(e) for e in events]
    assert [e.to_representation() for e in decoded] == [e.to_representation() for e in events]


async def test_kcat_sees_keys_headers_and_event_time(stack, uid):
    settings = _settings(stack, uid)
    await ensure_topics(bootstrap=stack.kafka_bootstrap, replication_factor=1, prefix=settings.topic_prefix)
    events = lifecycle_events(job_id=f"job-{uid}", user_id="erin", rng=random.Random(5), outcome="CANCELLED")
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(events)
    out = subprocess.run(
        ["kcat", "-C", "-b", stack.kafka_bootstrap, "-t", f"{uid}-job-lifecycle", "-o", "beginning", "-e",
         "-q", "-f", "%k|%T|%h|%S\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = [line.split("|") for line in out.stdout.splitlines() if line]
    assert len(lines) == len(events)
    seen = {(key, int(ts)) for key, ts, _headers, _size in lines}
    assert seen == {(f"job-{uid}", utc_ms(e.timestamp)) for e in events}
    assert all("event_type=" in headers and "correlation_id=" in headers for _k, _t, headers, _s in lines)
