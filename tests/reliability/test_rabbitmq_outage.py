"""RabbitMQ stopped for 10 s in the middle of a 5,000-event stream: after the restart every
event is in ``job-events-audit`` at least once (duplicates are counted and printed), and
every completion's notification reached its user's webhook at least once (deliveries go
through RabbitMQ's delivery queue; receivers dedupe by Idempotency-Key).

This stops the shared local RabbitMQ node (and always starts it again); Kafka and the
registry are untouched. Messages are persistent and queues durable, so what RabbitMQ
confirmed before the stop survives it; the bridge retries what it could not publish.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from app.core.ids import derived_id
from app.core.settings import Settings
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from fault_support import QueueDrain, WebhookSink
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture

EVENTS = 5_000
OUTAGE_S = 10.0


async def test_rabbitmq_outage_mid_stream_loses_nothing(worker_factory, worker_env, vhost, uid, report):  # noqa: F811
    worker = worker_factory(COSMIC_RABBITMQ_URL=vhost.url, COSMIC_WEBHOOK_ALLOWED_NETWORKS=WebhookSink.ALLOWED).start()
    await asyncio.to_thread(vhost.wait_for_queues, {"job-events-audit", "notification-delivery"})
    rng = random.Random(3)
    events = []
    for i in range(EVENTS // 4):
        events += lifecycle_events(job_id=f"job-{uid}-{i}", user_id=f"u-{i % 7}", rng=rng, outcome="COMPLETED")
    assert len(events) == EVENTS
    want = {e.event_id for e in events}
    notified = {derived_id(e.event_id, "notification") for e in events if e.event_type == "JobCompleted"}
    assert len(notified) == EVENTS // 4

    drain = QueueDrain(url=vhost.url, queue="job-events-audit").start()
    seen: Counter = drain.seen
    settings = Settings.from_env(environ={**worker_env, "COSMIC_RABBITMQ_URL": vhost.url})
    stopped_for = None
    hooks = await WebhookSink().start()
    try:
        await hooks.subscribe(base_url=worker.base_url, settings=settings, users=[f"u-{i}" for i in range(7)])
        async with EventPublisher(settings=settings) as publisher:
            async def produce() -> None:
                for start in range(0, EVENTS, 100):  # ~20 s of stream
                    await publisher.publish_many(events[start:start + 100])
                    await asyncio.sleep(0.4)

            producer = asyncio.create_task(produce())
            # Stop RabbitMQ once the stream is flowing through the bridge.
            await wait_until_async(lambda: len(seen) >= 1000, timeout=120, interval=0.1,
                                   what="1000 messages through the bridge", fail=False)
            assert len(seen) >= 1000, f"the bridge is not flowing:\n{worker.log_tail()}"
            before = len(seen)
            try:
                await asyncio.to_thread(vhost.node.stop)
                down_at = time.monotonic()
                await asyncio.sleep(OUTAGE_S)
            finally:
                await asyncio.to_thread(vhost.node.start)
            stopped_for = time.monotonic() - down_at
            await producer

        deadline = time.monotonic() + 150
        await wait_until_async(lambda: want <= set(seen), timeout=150, what="every message consumed", fail=False)
        await hooks.wait_for(ids=notified, timeout=max(deadline - time.monotonic(), 30))
    finally:
        await drain.stop()
        await hooks.stop()
    row = report(scenario=f"rabbitmq: server stopped {OUTAGE_S:.0f} s mid-stream", events_in=EVENTS)
    row.sink(name="rabbitmq job-events-audit", expected=want, seen=list(seen.elements()))
    row.notes["rabbitmq unavailable"] = f"{stopped_for:.1f} s (copies are deduped by message_id)"
    # Lifecycle notifications are counted; runtime-anomaly ones of the same users are not this
    # workload's (split() checks every other POST is one).
    lifecycle_posts, anomaly_keys = hooks.split(expected=notified)
    webhooks = row.sink(name="rabbitmq webhook deliveries", expected=notified, seen=lifecycle_posts)
    row.notes["other webhook notifications (runtime anomalies)"] = len(anomaly_keys)
    row.notes["webhook POSTs beyond one per notification (deduped by Idempotency-Key)"] = webhooks["duplicated"]
    missing = want - set(seen)
    duplicates = {mid: n for mid, n in seen.items() if n > 1}
    print(f"\nRabbitMQ unavailable {stopped_for:.1f} s: stopped {OUTAGE_S:.0f} s + restart (stop issued after {before} events seen); "
          f"received {sum(seen.values())} messages, {len(set(seen) & want)} distinct of {EVENTS}; "
          f"duplicates: {len(duplicates)} event ids ({sum(duplicates.values()) - len(duplicates)} extra copies)")
    for mid, n in sorted(duplicates.items())[:50]:
        print(f"  duplicate {mid} x{n}")
    assert not missing, f"{len(missing)} events never reached job-events-audit\n{worker.log_tail()}"
    assert webhooks["lost"] == 0 and webhooks["unexpected"] == 0, f"{webhooks}\n{worker.log_tail()}"
    log = worker.log_path.read_text(errors="replace")
    assert "guest:guest@" not in log
