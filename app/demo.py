"""A small demo event source: random jobs walking through their lifecycle on ``job-lifecycle``."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

from aiokafka import AIOKafkaProducer

from app.settings import Settings

LIFECYCLES = (
    ("JobSubmitted", "JobQueued", "JobStatusChanged:RUNNING", "JobCompleted"),
    ("JobSubmitted", "JobQueued", "JobStatusChanged:RUNNING", "JobFailed"),
    ("JobSubmitted", "JobQueued", "JobCancelled"),
)


def lifecycle_events(*, job_id: str, user_id: str, rng: random.Random) -> list[dict]:
    correlation_id = str(uuid.uuid4())
    events = []
    for step in rng.choice(LIFECYCLES):
        event_type, _, new_status = step.partition(":")
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": event_type,
                "job_id": job_id,
                "timestamp": int(time.time() * 1000),
                "user_id": user_id,
                "correlation_id": correlation_id,
                "new_status": new_status,
            }
        )
    return events


async def run_demo(*, settings: Settings, jobs: int | None, interval: float, seed: int | None = None) -> int:
    """Publish ``jobs`` job lifecycles (forever when None), one event every ``interval`` s."""
    rng = random.Random(seed)
    topic = settings.topic_prefix + "job-lifecycle"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    sent = 0
    try:
        n = 0
        while jobs is None or n < jobs:
            n += 1
            job_id = f"demo-job-{uuid.uuid4().hex[:8]}"
            for event in lifecycle_events(job_id=job_id, user_id=f"user-{rng.randint(1, 5)}", rng=rng):
                await producer.send_and_wait(topic, json.dumps(event).encode(), key=job_id.encode())
                sent += 1
                await asyncio.sleep(interval)
            print(f"demo: job {job_id} published ({sent} events so far)", flush=True)
    finally:
        await producer.stop()
    return sent
