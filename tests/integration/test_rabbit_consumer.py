"""The retry protocol of app.worker.rabbit_consumer against real RabbitMQ (own vhost per test):
measured backoff, dead letters with error headers, unparseable bodies, and the dlq CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import aio_pika

from app.core.errors import RetriableError
from app.core.settings import PROJECT_ROOT, Settings
from app.worker.rabbit_consumer import consume
from app.worker.rabbit_topology import DLQ, declare_topology
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture


async def _setup(url: str) -> aio_pika.abc.AbstractConnection:
    connection = await aio_pika.connect(url)
    await declare_topology(connection, url=url, queue_type="classic", retry_delays=Settings().retry_delays)
    return connection


async def _publish(connection, body: bytes, *, key: str = "job.submitted", message_id: str | None = None) -> str:  # noqa: ANN001
    message_id = message_id or str(uuid.uuid4())
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("job.events")
    await exchange.publish(aio_pika.Message(body, message_id=message_id, content_type="application/json",
                                            type="JobSubmitted", correlation_id="corr-1",
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=key)
    await channel.close()
    return message_id


async def _dlq_messages(connection, *, expect: int, timeout: float = 30) -> list:  # noqa: ANN001
    channel = await connection.channel()
    queue = await channel.get_queue(DLQ)
    out = []

    async def taken() -> bool:
        while len(out) < expect:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                return False
            out.append(message)
        return True

    await wait_until_async(taken, timeout=timeout, interval=0.2, what=f"{expect} dead letters", fail=False)
    await channel.close()
    return out


async def _run_consumer(settings: Settings, handler, until, timeout: float) -> None:  # noqa: ANN001
    stop = asyncio.Event()
    task = asyncio.create_task(consume(queue="job-events-audit", handler=handler, settings=settings, stop=stop))

    def done() -> bool:
        if until():
            return True
        if task.done():
            task.result()  # the consumer failed: raise its error
        return False

    await wait_until_async(done, timeout=timeout, interval=0.05, what="the consumer's work", fail=False)
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def test_fails_three_times_then_succeeds_after_1_2_4_seconds(vhost):  # noqa: F811
    connection = await _setup(vhost.url)
    settings = Settings.from_env(environ={"COSMIC_RABBITMQ_URL": vhost.url, "COSMIC_RABBITMQ_MAX_ATTEMPTS": "5"})
    calls: list[tuple[float, int]] = []
    succeeded = []

    async def handler(body, message):  # noqa: ANN001
        calls.append((time.monotonic(), int((message.headers or {}).get("x-retry-count", 0))))
        if len(calls) <= 3:
            raise RetriableError("downstream unavailable")
        succeeded.append(body["event_id"])

    await _publish(connection, json.dumps({"event_id": "e-1"}).encode())
    await _run_consumer(settings, handler, until=lambda: succeeded, timeout=30)
    gaps = [round(b[0] - a[0], 2) for a, b in zip(calls, calls[1:])]
    print(f"\nmeasured retry delays: {gaps} s (retry counts seen {[c[1] for c in calls]})")
    assert succeeded == ["e-1"] and len(calls) == 4
    assert [c[1] for c in calls] == [0, 1, 2, 3]
    for gap, want in zip(gaps, (1, 2, 4)):
        assert abs(gap - want) <= 0.6, gaps
    assert not await _dlq_messages(connection, expect=1, timeout=1)
    await connection.close()


async def test_always_failing_and_unparseable_messages_go_to_job_dlq_then_redrive(vhost):  # noqa: F811
    connection = await _setup(vhost.url)
    settings = Settings.from_env(environ={"COSMIC_RABBITMQ_URL": vhost.url, "COSMIC_RABBITMQ_MAX_ATTEMPTS": "3"})
    calls: list[str] = []

    async def handler(body, message):  # noqa: ANN001
        calls.append(body.get("kind"))
        if body.get("kind") == "boom":
            raise ValueError("not a valid job: boom")
        raise RetriableError("still down")

    failing = await _publish(connection, json.dumps({"kind": "retry"}).encode(), key="job.failed")
    fatal = await _publish(connection, json.dumps({"kind": "boom"}).encode(), key="job.completed")
    garbage = await _publish(connection, b"\x00not json{", key="job.j-1.status")
    dead: list = []
    started = time.monotonic()

    async def collect() -> None:
        dead.extend(await _dlq_messages(connection, expect=3, timeout=30))

    collector = asyncio.create_task(collect())
    await _run_consumer(settings, handler, until=collector.done, timeout=35)
    await collector
    by_id = {m.message_id: m for m in dead}
    assert set(by_id) == {failing, fatal, garbage}, [m.headers for m in dead]
    print(f"\nretries exhausted after {time.monotonic() - started:.1f} s; calls {calls}")

    h = by_id[failing].headers
    assert h["x-error-reason"] == "retries-exhausted" and h["x-error-class"] == "RetriableError"
    assert h["x-error-message"] == "still down" and h["x-retry-count"] == 2  # 3 attempts = 2 retries
    assert h["x-original-routing-key"] == "job.failed" and h["x-original-queue"] == "job-events-audit"
    assert calls.count("retry") == 3
    h = by_id[fatal].headers
    assert (h["x-error-reason"], h["x-error-class"], h["x-retry-count"]) == ("error", "ValueError", 0)
    assert calls.count("boom") == 1  # not retried
    h = by_id[garbage].headers
    assert h["x-error-reason"] == "undecodable" and h["x-error-class"] == "JSONDecodeError"
    assert h["x-original-routing-key"] == "j-1.status" or h["x-original-routing-key"] == "job.j-1.status"
    assert by_id[garbage].body == b"\x00not json{"  # untouched
    for m in dead:
        assert m.correlation_id == "corr-1" and m.type == "JobSubmitted"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT

    # Put them back (they were consumed above), then peek and redrive through the CLI.
    channel = await connection.channel(publisher_confirms=True)
    dlx = await channel.get_exchange("dlx")
    for m in dead:
        await dlx.publish(aio_pika.Message(m.body, headers=m.headers, message_id=m.message_id,
                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="job-dlq")
    env = {**os.environ, "COSMIC_RABBITMQ_URL": vhost.url}
    peek = subprocess.run([sys.executable, "-m", "app.ops.cli_rabbit", "dlq", "peek", "--json"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert peek.returncode == 0, peek.stderr
    items = [json.loads(line) for line in peek.stdout.splitlines()]
    assert {i["message_id"] for i in items} == {failing, fatal, garbage}
    assert vhost.depth(DLQ) == 3  # peek removed nothing
    # a tap on job.events sees the redriven message with its original routing key
    tap = await channel.declare_queue(f"tap-{uuid.uuid4().hex[:6]}", exclusive=True)
    await tap.bind("job.events", routing_key="#")
    redrive = subprocess.run([sys.executable, "-m", "app.ops.cli_rabbit", "dlq", "redrive", "--count", "1"], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert redrive.returncode == 0, redrive.stderr
    assert "redriven: 1" in redrive.stdout
    await asyncio.sleep(1)
    assert vhost.depth(DLQ) == 2
    back = await tap.get(no_ack=True, fail=False)
    assert back is not None and back.routing_key == dict(by_id[back.message_id].headers)["x-original-routing-key"]
    assert back.headers["x-retry-count"] == 0 and "x-error-class" not in back.headers
    await connection.close()
