"""Ingest: POST /api/events, the Python publisher and `cosmic send` against a real worker and broker."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import subprocess
import sys

import aiohttp

from app.core.settings import PROJECT_ROOT, Settings
from app.core.validation import event_to_json
from app.ops.demo import lifecycle_events
from app.ops.topic_reader import read_topic
from app.worker.publisher import EventPublisher
from support.ws import token


def _valid_events(job_id: str) -> list[dict]:
    return [event_to_json(e) for e in lifecycle_events(job_id=job_id, user_id="frank", rng=random.Random(9), outcome="COMPLETED")]


async def _records(*, bootstrap: str, topic: str) -> list:
    return await read_topic(bootstrap=bootstrap, topic=topic)


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict | None = None, *,
                bearer: str | None):
    auth = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with session.post(url, data=body, headers={"Content-Type": "application/json", **auth, **(headers or {})}) as r:
        return r.status, await r.json(content_type=None)


async def test_post_accepts_one_event_or_a_batch_and_rejects_bad_input_naming_the_field(worker_factory, worker_env, uid):
    worker = await asyncio.to_thread(worker_factory().start)
    url = f"{worker.base_url}/api/events"
    topic = f"{uid}-job-lifecycle"
    events = _valid_events(f"job-{uid}")
    publisher = token(worker_env, "platform-api", role="publisher")
    intruder = _valid_events(f"job-{uid}-intruder")[0]
    async with aiohttp.ClientSession() as session:
        # Only publishers and operators may publish: no token or a bad one 401, a user's 403.
        refusals = {
            "no token": (None, 401),
            "bad token": ("not-a-jwt", 401),
            "token of another key": (token(worker_env, "mallory", role="publisher", key="x" * 40), 401),
            "expired token": (token(worker_env, "platform-api", role="publisher", exp=1), 401),
            "a user's token": (token(worker_env, "frank"), 403),
        }
        for name, (bearer, expected) in refusals.items():
            status, body = await _post(session, url, json.dumps(intruder).encode(), bearer=bearer)
            assert status == expected and body["error"], (name, status, body)
        status, body = await _post(session, url, json.dumps(events[0]).encode(), bearer=publisher)
        assert status == 202, body
        assert body["accepted"] == 1 and body["event_ids"] == [events[0]["event_id"]]

        status, body = await _post(session, url, json.dumps(events[1:]).encode(),
                                   bearer=token(worker_env, "ops", role="operator"))  # operators may publish too
        assert status == 202 and body["event_ids"] == [e["event_id"] for e in events[1:]]

        bad_cases = {
            "malformed JSON": (b'{"event_type": "JobQueued",', ""),
            "unknown event_type": ({**events[1], "event_type": "JobExploded"}, "event_type"),
            "missing field": ({k: v for k, v in events[1].items() if k != "queue_name"}, "queue_name"),
            "mistyped field": ({**events[0], "priority": "high"}, "priority"),
            "mistyped nested field": (
                {**events[0], "resource_request": {**events[0]["resource_request"], "nodes": "four"}},
                "resource_request.nodes",
            ),
            "bad uuid": ({**events[1], "event_id": "not-a-uuid"}, "event_id"),
            "timestamp too far in the future": ({**events[1], "timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
            "timestamp before 2000": ({**events[1], "timestamp": 86_400_000}, "timestamp"),
            "unknown field": ({**events[1], "queue_nmae": "typo"}, "queue_nmae"),
        }
        for name, (payload, field) in bad_cases.items():
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            status, body = await _post(session, url, raw, bearer=publisher)
            assert status == 400, (name, body)
            assert body["field"] == field, (name, body)
            assert body["reason"], name

        # A batch is all-or-nothing and names the failing item.
        batch = [dict(e, event_id=None) for e in copy.deepcopy(events)]
        for item in batch:
            item.pop("event_id")
        batch[2]["new_status"] = "EXPLODED"
        status, body = await _post(session, url, json.dumps(batch).encode(), bearer=publisher)
        assert status == 400 and body["index"] == 2 and body["field"] == "new_status", body

        # Over the documented size → 413, nothing read past the limit.
        limit = Settings.from_env(environ=worker_env).ingest_max_bytes
        status, body = await _post(session, url, b"[" + b" " * limit + b"]", bearer=publisher)
        assert status == 413 and body["limit_bytes"] == limit

        # The correlation id of the request reaches events that carry none.
        fresh = _valid_events(f"job-{uid}-corr")[0]
        fresh.pop("correlation_id")
        status, body = await _post(session, url, json.dumps(fresh).encode(), {"X-Correlation-ID": f"req-{uid}"},
                                   bearer=publisher)
        assert status == 202 and body["correlation_ids"] == [f"req-{uid}"]

    records = await _records(bootstrap=worker_env["COSMIC_KAFKA_BOOTSTRAP"], topic=topic)
    produced = {dict(r.headers)["event_id"].decode() for r in records}
    assert produced == {e["event_id"] for e in events} | {fresh["event_id"]}, "a rejected event was produced"
    assert intruder["event_id"] not in produced


async def test_the_four_ingest_paths_produce_the_same_bytes(worker_factory, worker_env, uid):
    """POST /api/events, the Python publisher, `cosmic send` to Kafka and `cosmic send --url`
    through the worker (token from COSMIC_TOKEN) write the same record."""
    worker = await asyncio.to_thread(worker_factory().start)
    event = _valid_events(f"job-{uid}")[0]
    body = json.dumps(event)

    async with aiohttp.ClientSession() as session:
        status, answer = await _post(session, f"{worker.base_url}/api/events", body.encode(),
                                     bearer=token(worker_env, "platform-api", role="publisher"))
        assert status == 202, answer
    async with EventPublisher(settings=Settings.from_env(environ=worker_env)) as publisher:
        assert await publisher.publish_json(json.loads(body)) == [event["event_id"]]
    sent = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.ops.cli", "send", body], env=worker_env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.split() == [event["event_id"]]

    # Through the worker: the token comes from COSMIC_TOKEN (a user's is refused, exit 1).
    def send_url(bearer: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in worker_env.items() if k != "COSMIC_JWT_SECRET"}  # nothing to mint with
        return subprocess.run([sys.executable, "-m", "app.ops.cli", "send", "--url", worker.base_url, body],
                              env={**env, "COSMIC_TOKEN": bearer}, cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=60)

    refused = await asyncio.to_thread(send_url, token(worker_env, "frank"))
    assert refused.returncode == 1 and "403" in refused.stderr and "publisher" in refused.stderr, refused.stderr
    sent = await asyncio.to_thread(send_url, token(worker_env, "ci-bot", role="publisher"))
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.split() == [event["event_id"]]

    records = await _records(bootstrap=worker_env["COSMIC_KAFKA_BOOTSTRAP"], topic=f"{uid}-job-lifecycle")
    assert len(records) == 4
    assert len({r.value for r in records}) == 1, "the four paths wrote different bytes"
    assert len({r.key for r in records}) == 1 and records[0].key == f"job-{uid}".encode()
    assert len({r.timestamp for r in records}) == 1
    assert len({r.partition for r in records}) == 1


def test_cosmic_send_rejects_bad_input_with_the_field_and_exit_2(stack, uid):
    env = {**__import__("os").environ, "COSMIC_TOPIC_PREFIX": f"{uid}-"}
    out = subprocess.run(
        [sys.executable, "-m", "app.ops.cli", "send", json.dumps({"event_type": "JobQueued", "job_id": "j"})],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    error = json.loads(out.stderr.strip().splitlines()[-1])
    assert error["field"] == "queue_name"
    out = subprocess.run(
        [sys.executable, "-m", "app.ops.cli", "send", "{not json"], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "malformed JSON" in out.stderr
