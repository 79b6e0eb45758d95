"""Kafka → worker (the copies each topic's agent makes) → RabbitMQ: routing keys, properties, topology arguments,
and bad start-up input (mismatched queue, unreachable URL). Each test has its own vhost."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from datetime import timedelta

import aio_pika

from app.core.models import JobMetricsSample, NotificationRead, NotificationSent
from app.core.settings import Settings
from app.core.timeutil import utc_now
from app.ops.demo import lifecycle_events
from app.ops.worker_process import WorkerProcessError
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture

EXPECTED_KEY = {
    "JobSubmitted": "job.submitted", "JobCompleted": "job.completed", "JobFailed": "job.failed",
}


def expected_route(event) -> tuple[str, str]:  # noqa: ANN001
    if event.event_type in EXPECTED_KEY:
        return "job.events", EXPECTED_KEY[event.event_type]
    if event.event_type in ("JobQueued", "JobStatusChanged", "JobCancelled"):
        return "job.events", f"job.{event.job_id}.status"
    if event.event_type.startswith("Notification"):
        return "notifications", f"notifications.{event.user_id}"
    return "metrics", f"metrics.{event.job_id}"


async def drain(url: str, queue: str, *, want: set[str], timeout: float) -> dict[str, list]:
    """Consume ``queue`` until every message_id in ``want`` arrived; message_id → messages."""
    got: dict[str, list] = {}
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        q = await channel.get_queue(queue)
        # A consumer feeding an asyncio queue: waiting on that may time out and be retried (an
        # aio-pika queue iterator closes itself when a wait on it is cancelled).
        arrived: asyncio.Queue = asyncio.Queue()
        tag = await q.consume(arrived.put)

        async def received() -> bool:
            try:
                message = await asyncio.wait_for(arrived.get(), timeout=1)
            except asyncio.TimeoutError:
                return want <= set(got)
            got.setdefault(message.message_id, []).append(message)
            await message.ack()
            return want <= set(got)

        try:
            if not want <= set(got):
                await wait_until_async(received, timeout=timeout, interval=0, what=f"{len(want)} messages of {queue}",
                                       fail=False)
        finally:
            await q.cancel(tag)
    finally:
        await connection.close()
    return got


def sample_events(uid: str) -> list:
    rng = random.Random(5)
    events = []
    for i, outcome in enumerate(("COMPLETED", "FAILED", "CANCELLED")):
        events += lifecycle_events(job_id=f"job-{uid}-{i}", user_id=f"user-{uid}", rng=rng, outcome=outcome)
    now = utc_now()
    common = dict(timestamp=now, correlation_id=str(uuid.uuid4()), user_id=f"user-{uid}", schema_version=1)
    for cls in (NotificationSent, NotificationRead):
        nid = str(uuid.uuid4())
        events.append(cls(event_id=nid, event_type=cls.__name__, notification_id=nid, channel="WEBSOCKET",
                          severity="INFO", title="t", body="b", job_id=f"job-{uid}-0", **common))
    events.append(JobMetricsSample(
        event_id=str(uuid.uuid4()), event_type="JobMetricsSample", job_id=f"job-{uid}-0", node="c001",
        cpu_pct=50.0, gpu_pct=10.0, memory_gb=3.0, io_mb_s=1.0, execution_time_s=12.0,
        **{**common, "timestamp": now + timedelta(milliseconds=1)},
    ))
    return events


async def test_every_event_reaches_its_queues_with_key_and_properties(worker_factory, worker_env, vhost, uid):  # noqa: F811
    # A queue of our own on `metrics` (the topology binds none there) to see metrics.* arrive.
    connection = await aio_pika.connect(vhost.url)
    worker = worker_factory(COSMIC_RABBITMQ_URL=vhost.url).start()
    await asyncio.to_thread(vhost.wait_for_queues, {"job-events-audit", "job-dlq"})
    channel = await connection.channel()
    tap = await channel.declare_queue(f"tap-metrics-{uid}", auto_delete=True)
    await tap.bind("metrics", routing_key="metrics.#")

    events = sample_events(uid)
    env = {**worker_env, "COSMIC_RABBITMQ_URL": vhost.url}
    async with EventPublisher(settings=Settings.from_env(environ=env)) as publisher:
        await publisher.publish_many(events)
    job_events = [e for e in events if e.event_type.startswith("Job") and e.event_type != "JobMetricsSample"]
    notes = [e for e in events if e.event_type.startswith("Notification")]
    metrics = [e for e in events if e.event_type == "JobMetricsSample"]

    checks = [
        ("job-events-audit", job_events), ("job-events-api", job_events),
        ("websocket-broadcast", notes), (f"tap-metrics-{uid}", metrics),
    ]
    for queue, expected in checks:
        got = await drain(vhost.url, queue, want={e.event_id for e in expected}, timeout=90)
        missing = {e.event_id for e in expected} - set(got)
        assert not missing, f"{queue}: {len(missing)} missing\n{worker.log_tail()}"
        for event in expected:
            message = got[event.event_id][0]
            exchange, key = expected_route(event)
            assert (message.exchange, message.routing_key) == (exchange, key), (queue, event.event_type)
            assert message.correlation_id == event.correlation_id
            assert message.type == event.event_type
            assert message.content_type == "application/json"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert message.timestamp is not None
            body = json.loads(message.body)
            assert body["event_id"] == event.event_id and body["event_type"] == event.event_type
    await connection.close()

    # Queue arguments, read from the management API (not our client).
    queues = vhost.queues()
    expected_args = {
        "job-events-api": (30_000, 100_000), "job-events-audit": (300_000, 100_000),
        "websocket-broadcast": (30_000, 50_000), "job-dlq": (86_400_000, None),
    }
    for name, (ttl, length) in expected_args.items():
        args = queues[name]["arguments"]
        assert queues[name]["durable"] is True
        assert args.get("x-message-ttl") == ttl, (name, args)
        assert args.get("x-max-length") == length, (name, args)
        assert args.get("x-queue-type") == "classic", (name, args)
        if name != "job-dlq":
            assert args["x-dead-letter-exchange"] == "dlx", (name, args)
    for delay in Settings().retry_delays:
        args = queues[f"job-events-audit.retry.{delay}s"]["arguments"]
        assert args["x-message-ttl"] == delay * 1000 and args["x-dead-letter-routing-key"] == "job-events-audit"
    exchanges = {x["name"]: x for x in vhost.management(f"/api/exchanges/{vhost.name}")}
    for name, kind in (("job.events", "topic"), ("notifications", "topic"), ("metrics", "topic"), ("dlx", "direct")):
        assert exchanges[name]["type"] == kind and exchanges[name]["durable"] is True
    bindings = {(b["source"], b["destination"], b["routing_key"])
                for b in vhost.management(f"/api/bindings/{vhost.name}")}
    assert {("job.events", "job-events-api", "job.#"), ("job.events", "job-events-audit", "job.#"),
            ("notifications", "websocket-broadcast", "notifications.*"), ("dlx", "job-dlq", "job-dlq")} <= bindings
    # ... and with rabbitmqctl.
    listing = vhost.node.ctl("list_queues", "-p", vhost.name, "name", "arguments", "--no-table-headers")
    line = next(line for line in listing.splitlines() if line.startswith("job-events-audit\t"))
    assert "x-message-ttl" in line and "300000" in line and "x-dead-letter-exchange" in line

    # A second worker start declares the same topology again without complaint (idempotent).
    worker.stop()
    worker_factory(COSMIC_RABBITMQ_URL=vhost.url).start()

    # `cosmic rabbit status` lists the queues with their arguments.
    out = subprocess.run(
        [".venv/bin/python", "-m", "app.ops.cli_rabbit", "status"], env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "job-events-audit" in out.stdout and "x-message-ttl=300000" in out.stdout
    assert "guest:***@" in out.stdout and "guest:guest@" not in out.stdout


async def test_queue_with_other_arguments_stops_startup_and_nothing_is_deleted(worker_factory, vhost):  # noqa: F811
    connection = await aio_pika.connect(vhost.url)
    channel = await connection.channel()
    await channel.declare_queue("job-events-api", durable=True, arguments={"x-max-length": 10})
    await channel.default_exchange.publish(aio_pika.Message(b"keep me"), routing_key="job-events-api")
    await asyncio.sleep(0.5)
    await connection.close()

    worker = worker_factory(COSMIC_RABBITMQ_URL=vhost.url)
    try:
        worker.start(timeout=90)  # HTTP may come up before the bridge service refuses the queue
    except WorkerProcessError:
        pass  # ... or the worker has stopped already
    # ... but the worker then stops on its own, naming the queue and the argument.
    await wait_until_async(lambda: worker.proc.poll() is not None, timeout=60, what="the worker to exit", fail=False)
    assert worker.proc.poll() is not None, "the worker kept running despite the mismatched queue"
    assert worker.proc.returncode != 0
    log = worker.log_path.read_text(errors="replace")
    print("\n".join(line for line in log.splitlines() if "mismatch" in line)[:2000])
    assert "job-events-api" in log and "x-max-length (existing 10, wanted 100000)" in log, worker.log_tail()
    assert "nothing was deleted" in log
    queue = vhost.queues()["job-events-api"]
    assert queue["arguments"] == {"x-max-length": 10}
    # its message is still there: asked of the queue itself (the management API's message
    # counts are statistics, refreshed every few seconds)
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue("job-events-api", passive=True)
        assert declared.declaration_result.message_count == 1
    finally:
        await connection.close()


async def test_unreachable_rabbitmq_at_startup_is_logged_without_password_and_retried(worker_factory, uid):
    url = f"amqp://guest:s3cret-{uid}@127.0.0.1:1/nowhere"
    worker = worker_factory(COSMIC_RABBITMQ_URL=url).start()  # starts: HTTP answers
    await asyncio.sleep(6)
    status, _ = await asyncio.to_thread(lambda: worker.get_json(f"/api/jobs/job-{uid}", operator=True))
    assert status == 404
    # Its readiness shows RabbitMQ down (and only RabbitMQ), while it keeps serving.
    status, ready = await wait_until_async(lambda: asyncio.to_thread(worker.get_json, "/ready"), timeout=60,
                                           interval=1.0, what="/ready failing on rabbitmq only", fail=False,
                                           accept=lambda answer: answer[0] == 503 and answer[1].get("failing") == ["rabbitmq"])
    assert status == 503 and ready["failing"] == ["rabbitmq"], ready
    assert f"s3cret-{uid}" not in json.dumps(ready)
    log = worker.log_path.read_text(errors="replace")
    assert f"s3cret-{uid}" not in log
    redacted = "amqp://guest:***@127.0.0.1:1/nowhere"
    assert log.count(f"RabbitMQ at {redacted} is unreachable") == 1, worker.log_tail()
    assert log.count(f"RabbitMQ at {redacted} is still unreachable") >= 1, worker.log_tail()


async def test_metrics_nobody_subscribes_to_are_counted_unroutable_and_never_block(worker_factory, worker_env, vhost, uid):  # noqa: F811
    """The topology binds no queue on `metrics`: RabbitMQ returns every sample (mandatory
    publish). The bridge counts them and moves on — it used to retry them forever, which held
    track_job_metrics (which makes the copies) and job-metrics' offsets."""
    import urllib.request

    worker = worker_factory(COSMIC_RABBITMQ_URL=vhost.url).start()
    await asyncio.to_thread(vhost.wait_for_queues, {"job-events-audit", "job-dlq"})
    samples = [e for e in sample_events(uid) if e.event_type == "JobMetricsSample"]
    samples += [JobMetricsSample(**{**samples[0].asdict(), "event_id": str(uuid.uuid4())}) for _ in range(9)]
    env = {**worker_env, "COSMIC_RABBITMQ_URL": vhost.url}
    async with EventPublisher(settings=Settings.from_env(environ=env)) as publisher:
        await publisher.publish_many(samples)

    def unroutable() -> float:
        with urllib.request.urlopen(worker.base_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        line = next((x for x in text.splitlines()
                     if x.startswith('cosmic_rabbitmq_unroutable_total{exchange="metrics"}')), None)
        return float(line.split()[-1]) if line else 0.0

    await wait_until_async(lambda: unroutable() >= len(samples), timeout=60, what=f"{len(samples)} unroutable",
                           fail=False)
    assert unroutable() == len(samples), worker.log_tail()
    assert "no queue is bound for them" in worker.log_tail(400)
    assert "RabbitMQ did not ack" not in worker.log_tail(400)  # never retried as a failure


async def test_a_batch_goes_out_in_order_and_a_closed_channel_only_slows_it(vhost, uid):  # noqa: F811
    """``RabbitBridge.publish_events`` (a batch's copies: one write per window of
    confirms): every message reaches its queue in publish order with its properties, a metrics
    sample no queue is bound for is counted unroutable, and with the confirm channel closed under
    it the batch is still delivered whole (each message again on a fresh channel)."""
    from app.core.validation import event_to_json
    from app.worker.rabbit_bridge import RabbitBridge, event_frame

    bridge = RabbitBridge()
    bridge.url = vhost.url
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.ready(), 30)
        events = [event_to_json(e) for e in sample_events(uid)]
        job_events = [e for e in events if e["event_type"].startswith("Job") and e["event_type"] != "JobMetricsSample"]
        unroutable_before = bridge.unroutable.get("metrics", 0)
        await bridge.publish_events(events, window=4)  # several writes, a window each
        assert bridge.unroutable.get("metrics", 0) == unroutable_before + 1
        assert bridge.published == len(events) - 1
        want = [e["event_id"] for e in job_events]
        got = await drain(vhost.url, "job-events-audit", want=set(want), timeout=30)
        assert set(got) == set(want) and all(len(copies) == 1 for copies in got.values())
        for event in job_events:
            message = got[event["event_id"]][0]
            body, properties = event_frame(event)
            assert message.body == body and json.loads(message.body) == event
            assert (message.type, message.correlation_id, message.app_id, message.delivery_mode) == (
                properties.message_type, properties.correlation_id, properties.app_id, aio_pika.DeliveryMode.PERSISTENT)

        # order: one consumer reads the queue front to back
        more = [event_to_json(e) for e in sample_events(f"{uid}-b")]
        more_jobs = [e["event_id"] for e in more if e["event_type"].startswith("Job") and e["event_type"] != "JobMetricsSample"]
        await bridge.publish_events(more, window=5)
        connection = await aio_pika.connect(vhost.url)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue("job-events-audit")
            order = []
            while len(order) < len(more_jobs):
                message = await queue.get(timeout=10)
                order.append(message.message_id)
                await message.ack()
        finally:
            await connection.close()
        assert order == more_jobs

        # the confirm channel closed under the bridge: the batch still goes out whole
        await bridge._channel.close()
        last = [event_to_json(e) for e in sample_events(f"{uid}-c")]
        last_jobs = {e["event_id"] for e in last if e["event_type"].startswith("Job") and e["event_type"] != "JobMetricsSample"}
        await asyncio.wait_for(bridge.publish_events(last, window=8), 60)
        got = await drain(vhost.url, "job-events-audit", want=last_jobs, timeout=30)
        assert last_jobs <= set(got)
    finally:
        await bridge.stop()
