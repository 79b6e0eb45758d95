"""The per-event failure handling every agent shares (app.worker.streams.handle_one)."""

from __future__ import annotations

import random

import pytest
from aiokafka.errors import KafkaConnectionError

import app.worker.streams as streams
from app.core.errors import RejectedEvent, RetriableError
from app.ops.demo import lifecycle_events
from app.worker.main import codecs
from app.worker.streams import Origin, handle_one


@pytest.fixture
def origin(memory_registry):  # noqa: ANN001
    event = lifecycle_events(job_id="j-1", user_id="u", rng=random.Random(1), outcome="COMPLETED")[0]
    value = codecs.for_topic("job-lifecycle").encode(event)
    return Origin(topic="job-lifecycle", partition=3, offset=42, timestamp_ms=1, key=b"j-1", value=value)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    async def instant(_seconds):  # noqa: ANN001
        return None

    monkeypatch.setattr(streams.asyncio, "sleep", instant)


def _handler(failures: list[BaseException]):  # noqa: ANN202
    calls = []

    async def handler(event, origin):  # noqa: ANN001
        calls.append(event.event_id)
        if failures:
            raise failures.pop(0)

    return handler, calls


async def test_kafka_unavailable_holds_the_event_until_it_is_back(origin, captured):
    handler, calls = _handler([KafkaConnectionError(), KafkaConnectionError(), KafkaConnectionError()])
    assert await handle_one(topic="job-lifecycle", origin=origin, handler=handler) is True
    assert len(calls) == 4 and captured["dead"] == []


async def test_retriable_errors_are_retried_then_dead_lettered(origin, captured):
    handler, calls = _handler([RetriableError("webhook down")] * 10)
    assert await handle_one(topic="job-lifecycle", origin=origin, handler=handler) is False
    assert len(calls) == streams.settings.max_attempts
    assert [(reason, attempts) for _, reason, attempts in captured["dead"]] == [
        ("retries-exhausted", streams.settings.max_attempts)
    ]


async def test_rejections_and_bugs_are_dead_lettered_once_with_their_reason(origin, captured):
    handler, _ = _handler([RejectedEvent("no such job", reason="unknown-job")])
    assert await handle_one(topic="job-lifecycle", origin=origin, handler=handler) is False
    handler, _ = _handler([ZeroDivisionError("bug")])
    assert await handle_one(topic="job-lifecycle", origin=origin, handler=handler) is False
    assert [reason for _, reason, _ in captured["dead"]] == ["unknown-job", "error"]
    assert captured["dead"][0][0] == origin  # the original record, untouched


async def test_undecodable_bytes_never_reach_the_handler(origin, captured):
    handler, calls = _handler([])
    bad = Origin(topic="job-lifecycle", partition=0, offset=1, timestamp_ms=None, key=None, value=b"\x00\x00")
    assert await handle_one(topic="job-lifecycle", origin=bad, handler=handler) is False
    assert calls == [] and captured["dead"][0][1] == "undecodable:not-framed"


async def test_a_secondary_consumer_skips_undecodable_bytes_without_dead_lettering(origin, captured):
    handler, calls = _handler([])
    bad = Origin(topic="job-lifecycle", partition=0, offset=1, timestamp_ms=None, key=None, value=b"junk")
    assert await handle_one(topic="job-lifecycle", origin=bad, handler=handler, dead_letter_undecodable=False) is False
    assert calls == [] and captured["dead"] == []
    assert streams.UNDECODABLE_SKIPPED["job-lifecycle"] >= 1
