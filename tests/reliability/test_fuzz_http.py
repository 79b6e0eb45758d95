"""Fuzzing the HTTP API and the websocket feed of one real worker (module-scoped).

* ``POST /api/events`` with ~100 hypothesis-generated bad events (mutated valid events: fields
  missing, unknown, mistyped, NaN, huge, bad UUIDs and timestamps; alone or inside a batch),
  plus malformed bodies (broken JSON, invalid UTF-8, JSON nested too deeply, empty and
  oversized batches, over the size limit): each is answered 400 naming the same field (and
  batch index) as the validation does locally, or 413 — and afterwards no record at all
  reached job-lifecycle or the other event topics.
* schemathesis against the live ``/api/openapi.json`` with an operator token, every
  operation, bounded and derandomized: no 5xx, and status codes and content types as documented.
* Malformed websocket frames, fixed ones and ~80 hypothesis-generated ones (any text, any
  JSON, frames with the right keys and wrong values) on an authenticated connection: each
  gets an answer frame (error frames name the problem) and the connection stays open; binary
  frames get an error frame; oversized frames close 1009, text that is not UTF-8 closes 1007,
  and before authentication every malformed first frame closes 4001. Meanwhile another client
  is still served, and the worker stays up.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import pytest
import schemathesis
from access_support import (
    ENVELOPE,
    EVENT_TYPES,
    JSON_VALUES,
    LoopThread,
    WsClient,
    example,
    http,
    mutated_events,
    run_async,
)
from hypothesis import HealthCheck, Phase, assume, given, settings
from support.polling import wait_until
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from app.core.errors import EventValidationError
from app.core.timeutil import format_timestamp, utc_now
from app.core.validation import MAX_BATCH_SIZE, EventTimeBounds, parse_event
from app.ops.topic_reader import read_topic

#: No RabbitMQ copies (not under test; less load), small websocket frames, short auth timeout.
LIVE_WORKER_ENV = {
    "COSMIC_RABBITMQ_BRIDGE_ENABLED": "false",
    "COSMIC_WS_MAX_FRAME_BYTES": "4096",
    "COSMIC_WS_AUTH_TIMEOUT_SECONDS": "5",
}
EVENT_TOPICS = ("job-lifecycle", "job-metrics", "notifications", "audit-trail")
LIVE = dict(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck))


def _record_counts(live) -> dict[str, int]:  # noqa: ANN001
    async def count() -> dict[str, int]:
        return {t: len(await read_topic(bootstrap=live.settings.kafka_bootstrap, topic=live.topic(t)))
                for t in EVENT_TOPICS}

    return run_async(count())


def _fresh(data: object) -> object:
    """``data`` with the example envelope's fixed timestamp (older than the lateness bound the
    worker enforces) replaced by a recent one; other timestamps are the fuzzer's own."""
    if isinstance(data, dict) and data.get("timestamp") == ENVELOPE["timestamp"]:
        return {**data, "timestamp": format_timestamp(utc_now() - timedelta(seconds=60))}
    return data


def test_bad_events_are_answered_400_naming_the_field_and_never_produced(live_worker) -> None:  # noqa: ANN001
    live = live_worker
    publisher = live.publisher()
    before = _record_counts(live)
    sent: list[str] = []

    @settings(max_examples=100, **LIVE)
    @given(case=mutated_events(), batch=st.booleans(), position=st.integers(0, 3))
    def post(case: tuple, batch: bool, position: int) -> None:
        data, _, _ = case
        data = _fresh(data)
        try:
            parse_event(data=data, now=utc_now(), bounds=EventTimeBounds.of(live.settings))
        except EventValidationError as error:
            expected = error
        else:
            assume(False)  # only bad events here
        payload: object = data
        if batch:  # the bad event among valid ones (server-filled ids, so no duplicates)
            valid = [example(EVENT_TYPES[i % len(EVENT_TYPES)], envelope=False) for i in range(3)]
            payload = valid[:position] + [data] + valid[position:]
        body = json.dumps(payload).encode()
        assume(len(body) <= live.settings.ingest_max_bytes)  # over the limit is 413: tested below
        status, _, raw = http(live.base_url, "POST", "/api/events", body=body, token=publisher)
        sent.append(raw.decode(errors="replace")[:80])
        assert status == 400, (status, raw[:300])
        answer = json.loads(raw)
        assert answer["field"] == expected.field and answer["reason"], (answer, expected)
        assert answer.get("index") == (position if batch else None), answer

    post()
    assert len(sent) >= 50, f"only {len(sent)} bad events were sent"

    limit = live.settings.ingest_max_bytes
    malformed = {
        b'{"event_type": "JobQueued",': (400, ""),
        b"\xff\xfe{}": (400, ""),
        b"[" * 100_000 + b"]" * 100_000: (400, ""),
        b"": (400, ""),
        b"null": (400, ""),
        b"[]": (400, ""),
        b'"JobQueued"': (400, ""),
        json.dumps([example("JobQueued", envelope=False)] * (MAX_BATCH_SIZE + 1)).encode(): (400, ""),
        json.dumps({**_fresh(example("AuditRecord")), "before": "[" * 5000 + "]" * 5000}).encode(): (400, "before"),
        b"[" + b" " * limit + b"]": (413, None),
    }
    for body, (code, field) in malformed.items():
        status, _, raw = http(live.base_url, "POST", "/api/events", body=body, token=publisher)
        assert status == code, (body[:60], status, raw[:300])
        if field is not None:
            assert json.loads(raw)["field"] == field, (body[:60], raw[:300])
    assert http(live.base_url, "GET", "/health")[0] == 200
    assert _record_counts(live) == before, "a rejected event reached a topic"


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(live_worker) -> None:  # noqa: ANN001
    live = live_worker
    schema = schemathesis.openapi.from_url(f"{live.base_url}/api/openapi.json", timeout=30)
    auth = {"Authorization": f"Bearer {live.operator()}"}
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, **LIVE)
        @given(case=operation.as_strategy(headers=auth))
        def call(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=live.base_url, timeout=60)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                     content_type_conformance])

        try:
            call()
        except Exception as exc:  # noqa: BLE001 - collected: one run names every failing operation
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert calls >= 100, f"only {calls} requests were made"
    assert failures == [], "\n\n".join(failures)
    assert http(live.base_url, "GET", "/health")[0] == 200


# -- websocket ----------------------------------------------------------------------------------
_CHANNELS = st.sampled_from(["system:alerts", "jobs:all", "user:fuzzer:notifications", "user:other:notifications",
                             "job:nope:status", "job::status", "job: x :metrics", "weather:today", ""])
_TYPES = st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping", "auth", "pong", "welcome", "event", "",
                                    "SUBSCRIBE"]), JSON_VALUES)
_OBJECT_FRAMES = st.fixed_dictionaries(
    {"type": _TYPES},
    optional={"channel": st.one_of(_CHANNELS, JSON_VALUES), "resume": JSON_VALUES, "id": JSON_VALUES,
              "token": JSON_VALUES},
).map(json.dumps)
#: Frames under the connection's size limit (4096 bytes), as text.
_FRAMES = st.one_of(st.text(max_size=200), JSON_VALUES.map(json.dumps), _OBJECT_FRAMES).filter(
    lambda text: len(text.encode("utf-8")) < 4000)


def test_malformed_websocket_frames_get_error_frames_and_the_feed_keeps_serving(live_worker) -> None:  # noqa: ANN001
    live = live_worker
    loop = LoopThread()
    session = loop.run(_session())
    try:
        watcher = loop.run(_connected(session, live.ws_url, live.token("watcher")))
        fuzzer = loop.run(_connected(session, live.ws_url, live.token("fuzzer")))
        answered = generated = 0

        # fixed malformed frames: each answered with the documented error code
        for text, code in [("{nope", "bad_frame"), ("[]", "bad_frame"), ("null", "bad_frame"), ("42", "bad_frame"),
                           ('"subscribe"', "bad_frame"), ('{"type": 5}', "bad_frame"), ('{"type": "teleport"}',
                                                                                        "bad_frame"),
                           ('{"type": "subscribe"}', "bad_frame"), ('{"type": "subscribe", "channel": 7}', "bad_frame"),
                           ('{"type": "subscribe", "channel": "weather:x"}', "unknown_channel"),
                           ('{"type": "subscribe", "channel": "system:alerts", "resume": "x"}', "bad_frame"),
                           ('{"type": "subscribe", "channel": "system:alerts", "resume": [{"topic": "other", '
                            '"partition": 0, "offset": 0}]}', "bad_frame"),
                           ('{"type": "unsubscribe", "channel": "jobs:all"}', "bad_frame"),
                           ('{"type": "auth", "token": "x"}', "bad_frame"),
                           ("[" * 1500 + "]" * 1500, "bad_frame"), ("[" * 2000 + "]" * 2000, "bad_frame")]:
            replies = loop.run(_send_text(fuzzer, text))
            assert any(f.get("type") == "error" and f.get("code") == code for f in replies), (text[:80], replies)
            answered += 1
        replies = loop.run(_send_bytes(fuzzer, b"\x00\xff binary"))
        assert any(f.get("code") == "bad_frame" and "binary" in f.get("message", "") for f in replies), replies

        # generated frames: every one answered, the connection stays open
        @settings(max_examples=80, **LIVE)
        @given(text=_FRAMES)
        def send(text: str) -> None:
            nonlocal generated
            replies = loop.run(_send_text(fuzzer, text))
            assert replies, f"no answer to {text[:200]!r}"
            assert all(isinstance(f, dict) and isinstance(f.get("type"), str) for f in replies), replies
            assert not fuzzer.closed.is_set(), (text[:200], fuzzer.ws.close_code)
            generated += 1

        send()
        assert answered >= 16 and generated >= 60, (answered, generated)

        # documented close codes: oversized → 1009; text that is not UTF-8 → 1007
        assert loop.run(_closed_after(fuzzer, text="x" * 5000)) == 1009
        broken = loop.run(_connected(session, live.ws_url, live.token("fuzzer")))
        assert loop.run(_closed_after(broken, raw=b"\xff\xfe not utf-8")) == 1007
        # before authentication, any malformed first frame → 4001 (oversized → 1009)
        for first in ("{nope", "[]", '{"type": "ping"}', '{"type": "auth"}', '{"type": "auth", "token": 5}',
                      "[" * 1500 + "]" * 1500):
            fresh = loop.run(WsClient.connect(session, live.ws_url))
            assert loop.run(_closed_after(fresh, text=first)) == 4001, first
            assert fresh.frames and fresh.frames[-1].get("code") == "not_authenticated", fresh.frames
        fresh = loop.run(WsClient.connect(session, live.ws_url))
        assert loop.run(_closed_after(fresh, raw=b"\x01\x02", binary=True)) == 4001
        fresh = loop.run(WsClient.connect(session, live.ws_url))
        assert loop.run(_closed_after(fresh, raw=b"\xff\xfe")) == 1007
        fresh = loop.run(WsClient.connect(session, live.ws_url))
        assert loop.run(_closed_after(fresh, text="y" * 5000)) == 1009

        # the other client is still served, a new one too, and the worker is up
        assert loop.run(watcher.ping()) == []
        late = loop.run(_connected(session, live.ws_url, live.token("late")))
        assert loop.run(late.subscribe("system:alerts"))["type"] == "subscribed"
    finally:
        loop.run(session.close())
        loop.close()
    assert http(live.base_url, "GET", "/health")[0] == 200


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _connected(session: aiohttp.ClientSession, url: str, token: str) -> WsClient:
    client = await WsClient.connect(session, url, bearer=token)
    await client.welcome()
    return client


async def _send_text(client: WsClient, text: str) -> list[dict]:
    await client.ws.send_str(text)
    return await client.ping()


async def _send_bytes(client: WsClient, data: bytes) -> list[dict]:
    await client.ws.send_bytes(data)
    return await client.ping()


async def _closed_after(client: WsClient, *, text: str | None = None, raw: bytes | None = None,
                        binary: bool = False) -> int | None:
    """Send one frame (text, raw bytes as a text frame, or binary) and wait for the server's close."""
    if text is not None:
        await client.ws.send_str(text)
    elif binary:
        await client.ws.send_bytes(raw or b"")
    else:
        await client.ws.send_frame(raw or b"", aiohttp.WSMsgType.TEXT)
    try:
        return await client.closed_with(timeout=60)
    except asyncio.TimeoutError:
        pytest.fail(f"not closed within 60 s; frames: {client.frames[-3:]}")


def test_the_worker_survived_and_logged_no_secret(live_worker) -> None:  # noqa: ANN001
    live = live_worker
    wait_until(lambda: http(live.base_url, "GET", "/health")[0] == 200, timeout=60, what="GET /health 200",
               diagnostics=live.process.log_tail)
    assert live.process.proc is not None and live.process.proc.poll() is None
    log = live.log_path.read_text(errors="replace")
    # aiohttp logs an exception that escaped a view (a 500, or a websocket handler that crashed)
    assert "Error handling request" not in log and "RecursionError" not in log, live.process.log_tail(80)
    assert live.leaks() == []
