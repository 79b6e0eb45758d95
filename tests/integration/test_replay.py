"""Replay by time window on the real stack: ``GET /api/events/replay`` and ``cosmic replay``.

Job lifecycles are produced with event times spread over 5 minutes an hour ago (jobs land on
several partitions); the replayed window covers the middle 100 s. It must give exactly the
events produced inside the window (count and set), in timestamp order, across partitions,
with an error line for an undecodable record inside the window; with a limit, the cursors
must give the rest; a plain user only gets their own events.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaProducer

from app.core.auth import mint_token
from app.core.settings import PROJECT_ROOT, Settings
from app.core.timeutil import format_epoch_ms as format_ms
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async

JOBS = 30
STEP = timedelta(seconds=10)


def _http(worker, path: str, token: str | None) -> tuple[int, dict, bytes]:  # noqa: ANN001
    request = urllib.request.Request(f"{worker.base_url}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode().splitlines() if line]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _produce(env: dict[str, str], base: datetime) -> tuple[list, int, tuple[int, int] | None]:
    """All events (sorted by time), and the junk record's timestamp; produced in time order."""
    settings = Settings.from_env(environ=env)
    rng = random.Random(5)
    events = []
    for i in range(JOBS):
        events += lifecycle_events(job_id=f"job-{i:02d}-{env['COSMIC_TOPIC_PREFIX']}", user_id=f"user-{i % 3}",
                                   rng=rng, start=base + i * STEP, outcome="COMPLETED")
    events.sort(key=lambda e: e.timestamp)
    junk_ms = int((base + 15 * STEP + timedelta(seconds=5)).timestamp() * 1000)
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many([e for e in events if e.timestamp.timestamp() * 1000 < junk_ms])
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait(settings.topic_prefix + "job-lifecycle", b"\x00\x00junk",
                                                key=b"junk-key", timestamp_ms=junk_ms)
        finally:
            await producer.stop()
        await publisher.publish_many([e for e in events if e.timestamp.timestamp() * 1000 >= junk_ms])
    return events, junk_ms, (meta.partition, meta.offset)


async def test_replay_gives_exactly_the_window_in_timestamp_order(worker_factory, worker_env):
    worker = await asyncio.to_thread(worker_factory().start)
    settings = Settings.from_env(environ=worker_env)
    operator = mint_token(settings=settings, sub="ops", role="operator")
    base = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    events, junk_ms, junk_position = await _produce(worker_env, base)
    start, end = base + 10 * STEP, base + 20 * STEP  # jobs 10..19: 40 events
    inside = [e for e in events if start <= e.timestamp < end]
    assert len(inside) == 40 and len(events) == 4 * JOBS
    window = f"topic=job-lifecycle&start={_iso(start)}&end={_iso(end)}"

    status, headers, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{window}", operator)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/x-ndjson")
    lines = _lines(body)
    got = [line for line in lines if line["type"] == "event"]
    assert len(got) == len(inside)
    assert {line["event"]["event_id"] for line in got} == {e.event_id for e in inside}
    assert [line["timestamp"] for line in got] == sorted(line["timestamp"] for line in got)
    assert [line["event"]["event_id"] for line in got] == [e.event_id for e in inside]  # 1 ms apart: total order
    assert len({line["partition"] for line in got}) >= 3, "the window should span several partitions"
    assert all(line["topic"] == settings.topic_prefix + "job-lifecycle" for line in got)
    errors = [line for line in lines if line["type"] == "error"]
    assert [(e["partition"], e["offset"]) for e in errors] == [junk_position]
    assert errors[0]["timestamp"] == format_ms(junk_ms) and "undecodable" in errors[0]["reason"]
    assert lines[-1] == {"type": "end", "events": 40}
    assert "X-Replay-Earliest-Available" not in headers

    # with a limit: pages joined by cursors give the same sequence
    paged: list[str] = []
    cursor = ""
    for _ in range(10):
        path = f"/api/events/replay?{window}&limit=15" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = await asyncio.to_thread(_http, worker, path, operator)
        assert status == 200, body
        page = _lines(body)
        paged += [line["event"]["event_id"] for line in page if line["type"] == "event"]
        if page[-1]["type"] == "end":
            break
        assert page[-1]["type"] == "cursor" and page[-1]["events"] == 15
        cursor = page[-1]["cursor"]
    assert paged == [e.event_id for e in inside]

    # filters: a job, an event type; a plain user only gets their own events
    one_job = inside[0].job_id
    status, _, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{window}&job_id={one_job}", operator)
    assert [line["event"]["event_id"] for line in _lines(body) if line["type"] == "event"] == \
        [e.event_id for e in inside if e.job_id == one_job]
    user = mint_token(settings=settings, sub="user-1")
    status, _, body = await asyncio.to_thread(
        _http, worker, f"/api/events/replay?{window}&event_type=JobCompleted", user)
    mine = [line["event"] for line in _lines(body) if line["type"] == "event"]
    assert [e["event_id"] for e in mine] == [e.event_id for e in inside
                                             if e.user_id == "user-1" and e.event_type == "JobCompleted"]
    assert mine
    status, _, _ = await asyncio.to_thread(_http, worker, f"/api/events/replay?{window}&user_id=user-2", user)
    assert status == 403

    # an empty window before the retained data: 200, only the trailer, and the earliest time
    early = f"topic=job-lifecycle&start={_iso(base - timedelta(days=1))}&end={_iso(base - timedelta(hours=1))}"
    status, headers, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{early}", operator)
    assert status == 200
    assert _lines(body) == [{"type": "end", "events": 0, "earliest_available": format_ms(
        int(events[0].timestamp.timestamp() * 1000))}]
    assert headers["X-Replay-Earliest-Available"] == format_ms(int(events[0].timestamp.timestamp() * 1000))

    # bad requests name the field; no token is 401
    for query, field in ((f"topic=job-lifecycle&start={_iso(end)}&end={_iso(start)}", "end"),
                         (f"topic=job-lifecycle&start=noon&end={_iso(end)}", "start"),
                         (f"topic=nope&start={_iso(start)}&end={_iso(end)}", "topic"),
                         (f"topic=job-metrics&start={_iso(start)}&end={_iso(end)}&cursor={cursor}", "cursor")):
        status, _, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{query}", operator)
        assert status == 400 and json.loads(body)["field"] == field, body
    assert (await asyncio.to_thread(_http, worker, f"/api/events/replay?{window}", None))[0] == 401

    # the CLI reads Kafka directly, with the same result
    started = time.monotonic()
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.ops.cli", "replay", "--topic", "job-lifecycle", "--start", _iso(start),
         "--end", _iso(end), "--json"],
        env=worker_env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    cli_lines = _lines(out.stdout.encode())
    assert [line["event"]["event_id"] for line in cli_lines if line["type"] == "event"] == \
        [e.event_id for e in inside]
    assert cli_lines[-1] == {"type": "end", "events": 40}
    bad = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.ops.cli", "replay", "--topic", "job-lifecycle",
                         "--start", _iso(end), "--end", _iso(start)],
        env=worker_env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert bad.returncode == 2 and "--end" in bad.stderr, (bad.stdout, bad.stderr, time.monotonic() - started)


def _post(worker, events: list[dict], token: str) -> tuple[int, dict]:  # noqa: ANN001
    request = urllib.request.Request(f"{worker.base_url}/api/events", data=json.dumps(events).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_an_event_posted_after_newer_ones_is_in_the_replay_of_its_own_minute(worker_factory, worker_env, uid):
    """COSMIC_MAX_EVENT_LATENESS: a JobSubmitted stamped 30 min ago, posted after newer events of
    its partition, is replayed in its own minute and in order; one stamped 2 h ago (or 10 min
    ahead) is refused naming the field and the bound; a record written straight to Kafka more
    than the bound behind its partition's newest is dead-lettered with the reason."""
    from aiokafka import AIOKafkaProducer

    from app.core.codecs import Codecs
    from app.ops.replay import key_partition
    from app.ops.topic_reader import read_topic
    from app.core.validation import event_to_json

    worker = await asyncio.to_thread(worker_factory().start)
    settings = Settings.from_env(environ=worker_env)
    publisher, operator = worker.publisher_token(), worker.operator_token()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    late_job = f"late-{uid}"
    partition = key_partition(key=late_job, partitions=list(range(10)))
    same = [job for job in (f"new-{uid}-{i}" for i in range(200))
            if key_partition(key=job, partitions=list(range(10))) == partition][:4]
    rng = random.Random(3)
    newer = [event_to_json(e) for i, job in enumerate(same)
             for e in lifecycle_events(job_id=job, user_id="nina", rng=rng, start=now - timedelta(seconds=60 - i),
                                       outcome="COMPLETED")]
    status, answer = await asyncio.to_thread(_post, worker, newer, publisher)
    assert status == 202, answer

    minute = (now - timedelta(minutes=30)).replace(second=0)
    late = event_to_json(lifecycle_events(job_id=late_job, user_id="nina", rng=rng,
                                          start=minute + timedelta(seconds=20))[0])
    status, answer = await asyncio.to_thread(_post, worker, [late], publisher)
    assert status == 202, answer

    too_late = {**late, "event_id": None, "timestamp": _iso(now - timedelta(hours=2))}
    too_late.pop("event_id")
    status, answer = await asyncio.to_thread(_post, worker, [too_late], publisher)
    assert status == 400 and answer["field"] == "timestamp", answer
    assert "COSMIC_MAX_EVENT_LATENESS" in answer["reason"] and "1 h" in answer["reason"], answer
    ahead = {**too_late, "timestamp": _iso(now + timedelta(minutes=10))}
    status, answer = await asyncio.to_thread(_post, worker, [ahead], publisher)
    assert status == 400 and answer["field"] == "timestamp" and "COSMIC_MAX_CLOCK_SKEW" in answer["reason"], answer

    # The minute of the late event: exactly it, though newer records precede it in its partition.
    window = f"topic=job-lifecycle&start={_iso(minute)}&end={_iso(minute + timedelta(minutes=1))}"
    status, _, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{window}", operator)
    assert status == 200, body
    got = [line for line in _lines(body) if line["type"] == "event"]
    assert [line["event"]["event_id"] for line in got] == [late["event_id"]], body[:2000]
    assert got[0]["partition"] == partition

    # The whole half hour, in pages of 3: every event once, in timestamp order, the late one first.
    span = f"topic=job-lifecycle&start={_iso(minute)}&end={_iso(now + timedelta(minutes=1))}"
    status, _, body = await asyncio.to_thread(_http, worker, f"/api/events/replay?{span}", operator)
    whole = [line["event"]["event_id"] for line in _lines(body) if line["type"] == "event"]
    assert whole[0] == late["event_id"] and sorted(whole) == sorted([late["event_id"]] + [e["event_id"] for e in newer])
    paged, cursor = [], None
    for _ in range(100):
        path = f"/api/events/replay?{span}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = await asyncio.to_thread(_http, worker, path, operator)
        assert status == 200, body
        lines = _lines(body)
        paged += [line["event"]["event_id"] for line in lines if line["type"] == "event"]
        if lines[-1]["type"] == "end":
            break
        cursor = lines[-1]["cursor"]
    assert paged == whole

    # Straight to Kafka, past validation: 2 h behind its partition's newest record → dead-lettered.
    stray = lifecycle_events(job_id=same[0], user_id="nina", rng=rng, start=now - timedelta(hours=2))[0]
    codecs = Codecs(settings=settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_prefix + "job-lifecycle", codecs.for_topic("job-lifecycle").encode(stray),
                                     key=same[0].encode(), partition=partition,
                                     timestamp_ms=int(stray.timestamp.timestamp() * 1000))
    finally:
        await producer.stop()

    def reasons_of(records: list) -> set[str]:
        return {dict(r.headers).get("dlq.reason", b"").decode() for r in records}

    dead = await wait_until_async(
        lambda: read_topic(bootstrap=settings.kafka_bootstrap, topic=settings.topic_prefix + "job-lifecycle.dlq"),
        timeout=90, interval=1.0, what="the late event dead-lettered", accept=lambda d: "late-event" in reasons_of(d),
        describe=lambda d: f"not dead-lettered: {reasons_of(d or [])}", diagnostics=worker.log_tail)
    message = next(dict(r.headers)["dlq.error_message"].decode() for r in dead
                   if dict(r.headers).get("dlq.reason") == b"late-event")
    assert "COSMIC_MAX_EVENT_LATENESS" in message, message
