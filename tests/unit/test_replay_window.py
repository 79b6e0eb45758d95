"""Replay core without a broker: request parsing, cursors, and the timestamp merge over a fake
consumer (records spread over partitions, out-of-window and undecodable ones)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from app.core.errors import EventDecodeError
from app.core.settings import Settings
from app.core.timeutil import format_epoch_ms as format_ms
from app.core.validation import event_to_json
from app.ops.demo import lifecycle_events
from app.ops.replay import (
    Replay,
    ReplayError,
    PartitionResume,
    ReplayCursor,
    ReplayQuery,
    _Partition,
    decode_cursor,
    encode_cursor,
    key_partition,
    parse_query,
    parse_time,
)
from aiokafka import TopicPartition

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
T0_MS = int(T0.timestamp() * 1000)
TOPIC = "pfx-job-lifecycle"


class FakeCodec:
    def __init__(self) -> None:
        self.events: dict[bytes, object] = {}

    def decode(self, value: bytes):  # noqa: ANN201
        if value not in self.events:
            raise EventDecodeError("not Confluent-framed", reason="not-framed")
        return self.events[value]

    def decode_json(self, value: bytes) -> dict:
        return event_to_json(self.decode(value))


class FakeConsumer:
    """Serves each partition's records from the seeked position, two at a time."""

    def __init__(self, logs: dict[int, list]) -> None:
        self.logs = logs
        self.pos: dict[int, int] = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp.partition] = offset

    async def getmany(self, *tps, timeout_ms: int, max_records: int):  # noqa: ANN002, ANN201
        out = {}
        for tp in tps:
            start = self.pos[tp.partition]
            chunk = self.logs[tp.partition][start:start + 2]
            if chunk:
                out[tp] = chunk
                self.pos[tp.partition] = start + len(chunk)
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp.partition]

    def pause(self, tp: TopicPartition) -> None:
        pass

    async def stop(self) -> None:
        pass


def _record(partition: int, offset: int, ts_ms: int, value: bytes, key: bytes = b"k") -> SimpleNamespace:
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, timestamp=ts_ms, key=key, value=value)


def _world(seed: int = 3):
    """3 partitions of records at spread timestamps; window [T0+10s, T0+50s). Returns
    (codec, logs, expected ids in order, the bad record's position)."""
    rng = random.Random(seed)
    codec = FakeCodec()
    logs: dict[int, list] = {0: [], 1: [], 2: []}
    expected: list[tuple[int, int, int, str, str]] = []
    n = 0
    for second in range(0, 60, 2):
        partition = rng.randrange(3)
        event = lifecycle_events(job_id=f"job-{second}", user_id=f"u{second % 2}", rng=rng,
                                 start=T0 + timedelta(seconds=second))[0]
        value = f"v{n}".encode()
        n += 1
        codec.events[value] = event
        ts = T0_MS + second * 1000
        offset = len(logs[partition])
        logs[partition].append(_record(partition, offset, ts, value))
        if 10_000 <= ts - T0_MS < 50_000:
            expected.append((ts, partition, offset, event.event_id, event.user_id))
    # a late record (timestamp before the window) in the middle of partition 1, and junk
    logs[1].append(_record(1, len(logs[1]), T0_MS + 1000, b"v0"))
    bad = (2, len(logs[2]))
    logs[2].append(_record(2, len(logs[2]), T0_MS + 30_500, b"\x00junk"))
    expected.sort()
    return codec, logs, expected, bad


def _replay(codec: FakeCodec, logs: dict[int, list], query: ReplayQuery, resume: ReplayCursor | None = None,
            settings: Settings | None = None) -> Replay:
    """A replay of every record of ``logs`` (start 0, stop the end), as ``open()`` would plan
    it, with a fake consumer for each of its two readers."""
    replay = Replay(settings=settings or Settings(topic_prefix="pfx-"), query=query,
                    codecs=SimpleNamespace(for_topic=lambda topic: codec))
    for p, log in logs.items():
        replay.parts.append(_Partition(tp=TopicPartition(TOPIC, p), start=0, stop=len(log)))
    if resume is not None:
        replay.resume(resume)
    replay.consumer = FakeConsumer(logs)  # type: ignore[assignment]
    replay.scanner = FakeConsumer(logs)  # type: ignore[assignment]
    return replay


def _query(**extra) -> ReplayQuery:  # noqa: ANN003
    return ReplayQuery(topic="job-lifecycle", start_ms=T0_MS + 10_000, end_ms=T0_MS + 50_000, **extra)


async def _collect(replay: Replay) -> list[dict]:
    return [line async for line in replay.lines()]


async def test_merge_gives_exactly_the_window_in_timestamp_order_and_reports_bad_records():
    codec, logs, expected, bad = _world()
    assert len({e[1] for e in expected}) == 3, "the window must span every partition"
    lines = await _collect(_replay(codec, logs, _query()))
    events = [line for line in lines if line["type"] == "event"]
    assert [line["event"]["event_id"] for line in events] == [e[3] for e in expected]
    assert [(line["partition"], line["offset"]) for line in events] == [(e[1], e[2]) for e in expected]
    stamps = [line["timestamp"] for line in events]
    assert stamps == sorted(stamps)
    errors = [line for line in lines if line["type"] == "error"]
    assert [(e["partition"], e["offset"]) for e in errors] == [bad]
    assert "not Confluent-framed" in errors[0]["reason"] and errors[0]["topic"] == TOPIC
    assert lines[-1] == {"type": "end", "events": len(expected)}


async def test_filters_by_event_type_and_user():
    codec, logs, expected, _ = _world()
    lines = await _collect(_replay(codec, logs, _query(user_id="u0", event_type="JobSubmitted")))
    ids = [line["event"]["event_id"] for line in lines if line["type"] == "event"]
    assert ids == [e[3] for e in expected if e[4] == "u0"] and ids
    none = await _collect(_replay(codec, logs, _query(event_type="JobCompleted")))
    assert [line["type"] for line in none] == ["error", "end"]


async def test_limit_yields_a_cursor_that_resumes_with_the_rest():
    codec, logs, expected, _ = _world()
    query = _query(limit=4)
    first = await _collect(_replay(codec, logs, query))
    assert first[-1]["type"] == "cursor" and first[-1]["events"] == 4
    positions = decode_cursor(cursor=first[-1]["cursor"], query=query)
    ids = [line["event"]["event_id"] for line in first if line["type"] == "event"]
    pages = 1
    while True:
        page = await _collect(_replay(codec, logs, query, resume=positions))
        pages += 1
        ids += [line["event"]["event_id"] for line in page if line["type"] == "event"]
        if page[-1]["type"] == "end":
            break
        positions = decode_cursor(cursor=page[-1]["cursor"], query=query)
        assert pages < 50
    assert ids == [e[3] for e in expected]
    # records past the window's last event remain to be read (and dropped) after page 5
    assert pages in (len(expected) // 4, len(expected) // 4 + 1)


def test_cursor_of_another_window_or_topic_is_refused():
    query = _query()
    made = ReplayCursor(positions={0: PartitionResume(next=5, frontier=T0_MS, scan_next=9, scan_frontier=T0_MS + 5),
                                   1: PartitionResume(next=7, frontier=None, scan_next=7, scan_frontier=None)},
                        after=(T0_MS, 1, 6), late=((T0_MS + 1, 0, 8, T0_MS + 5),))
    cursor = encode_cursor(query=query, cursor=made)
    assert decode_cursor(cursor=cursor, query=query) == made
    assert decode_cursor(cursor=cursor, query=_query(limit=10)) == made  # limit may change
    for other in (ReplayQuery(topic="job-metrics", start_ms=query.start_ms, end_ms=query.end_ms),
                  ReplayQuery(topic="job-lifecycle", start_ms=query.start_ms, end_ms=query.end_ms + 1),
                  _query(job_id="job-1")):
        with pytest.raises(ReplayError) as info:
            decode_cursor(cursor=cursor, query=other)
        assert info.value.field == "cursor"
    for junk in ("%%%", "bm90LWpzb24", encode_cursor(query=query, cursor=ReplayCursor(positions={}))[:-3] + "AAA"):
        with pytest.raises(ReplayError):
            decode_cursor(cursor=junk, query=query)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"topic": "nope", "start": "2024-05-01T12:00:00Z", "end": "2024-05-01T13:00:00Z"}, "topic"),
        ({"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T13:00:00Z"}, "topic"),
        ({"topic": "job-lifecycle", "end": "2024-05-01T13:00:00Z"}, "start"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z"}, "end"),
        ({"topic": "job-lifecycle", "start": "yesterday", "end": "2024-05-01T13:00:00Z"}, "start"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z", "end": "2024-13-01T13:00:00Z"}, "end"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z", "end": "2024-05-01T11:59:59Z"}, "end"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z", "end": "2024-05-01T13:00:00Z",
          "event_type": "AuditRecord"}, "event_type"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z", "end": "2024-05-01T13:00:00Z",
          "limit": "0"}, "limit"),
        ({"topic": "job-lifecycle", "start": "2024-05-01T12:00:00Z", "end": "2024-05-01T13:00:00Z",
          "limit": "ten"}, "limit"),
    ],
)
def test_bad_requests_name_the_field(params, field):
    with pytest.raises(ReplayError) as info:
        parse_query(params=params)
    assert info.value.field == field
    assert info.value.to_dict()["field"] == field and info.value.reason


def test_query_parsing_accepts_offsets_prefixed_topics_and_empty_windows():
    query = parse_query(params={"topic": "pfx-audit-trail", "start": "2024-05-01T14:00:00+02:00",
                                "end": "2024-05-01T12:00:00", "limit": "5", "event_type": "AuditRecord"},
                        topic_prefix="pfx-")
    assert query.topic == "audit-trail" and query.start_ms == query.end_ms == T0_MS and query.limit == 5
    assert parse_time(value=str(T0_MS), field="start") == T0_MS
    assert format_ms(T0_MS + 7) == "2024-05-01T12:00:00.007Z"


def test_key_partition_matches_the_producers_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(10))
    for key in ("job-1", "job-2", "a-much-longer-job-identifier"):
        assert key_partition(key=key, partitions=parts) == DefaultPartitioner()(key.encode(), parts, parts)
    assert {key_partition(key=f"job-{i}", partitions=parts) for i in range(100)} == set(parts)


# -- out-of-order records within the lateness bound --------------------------------------------
def _late_world(seed: int = 11):
    """3 partitions of 120 records each, one per second from T0, each partition shuffled so a
    record may follow ones stamped up to 40 s later (the bound below allows 60 s). Returns
    (codec, logs, expected (ts, partition, offset, event_id) of the window [T0+10s, T0+50s))."""
    rng = random.Random(seed)
    codec = FakeCodec()
    logs: dict[int, list] = {}
    expected = []
    n = 0
    for partition in range(3):
        seconds = sorted(range(120), key=lambda s: s + rng.uniform(0, 40))
        logs[partition] = []
        for offset, second in enumerate(seconds):
            event = lifecycle_events(job_id=f"job-{partition}-{second}", user_id="u", rng=rng,
                                     start=T0 + timedelta(seconds=second))[0]
            value = f"late{n}".encode()
            n += 1
            codec.events[value] = event
            ts = T0_MS + second * 1000 + partition  # distinct across partitions too
            logs[partition].append(_record(partition, offset, ts, value))
            if 10_000 <= ts - T0_MS < 50_000:
                expected.append((ts, partition, offset, event.event_id))
    expected.sort()
    return codec, logs, expected


def _late_settings() -> Settings:
    return Settings(topic_prefix="pfx-", max_event_lateness=50, max_clock_skew=10)


async def test_records_posted_late_within_the_bound_are_replayed_exactly_and_in_order():
    codec, logs, expected = _late_world()
    # the logs really are out of order: some in-window record follows one stamped past the end
    assert any(any(r.timestamp >= T0_MS + 50_000 for r in log[:i]) and T0_MS + 10_000 <= log[i].timestamp < T0_MS + 50_000
               for log in logs.values() for i in range(len(log)))
    lines = await _collect(_replay(codec, logs, _query(), settings=_late_settings()))
    got = [(line["partition"], line["offset"]) for line in lines if line["type"] == "event"]
    assert got == [(e[1], e[2]) for e in expected]
    assert lines[-1] == {"type": "end", "events": len(expected)}


@pytest.mark.parametrize("limit", [1, 3, 7, 40])
async def test_pages_of_an_out_of_order_window_add_up_to_the_whole_window(limit: int):
    codec, logs, expected = _late_world(seed=limit)
    query = _query(limit=limit)
    resume = None
    got: list[tuple[int, int]] = []
    for _ in range(200):
        page = await _collect(_replay(codec, logs, query, resume=resume, settings=_late_settings()))
        got += [(line["partition"], line["offset"]) for line in page if line["type"] == "event"]
        if page[-1]["type"] == "end":
            break
        assert page[-1]["events"] == limit
        resume = decode_cursor(cursor=page[-1]["cursor"], query=query)
    assert got == [(e[1], e[2]) for e in expected]


def test_a_cursor_of_the_previous_version_is_refused_naming_the_field():
    import base64
    import json

    query = _query()
    old = base64.urlsafe_b64encode(json.dumps({"v": 1, "d": query.digest(), "p": {"0": 3}}).encode()).decode()
    with pytest.raises(ReplayError) as info:
        decode_cursor(cursor=old, query=query)
    assert info.value.field == "cursor" and "older version" in str(info.value)


@pytest.mark.parametrize("named", [0, 2])
async def test_pages_are_exact_when_the_cursor_cannot_name_every_late_record(monkeypatch, named: int):
    import app.ops.replay

    monkeypatch.setattr(app.ops.replay, "MAX_CURSOR_LATE", named)  # the next page scans for them again
    codec, logs, expected = _late_world(seed=5)
    query = _query(limit=5)
    resume, got, rescans = None, [], 0
    for _ in range(200):
        page = await _collect(_replay(codec, logs, query, resume=resume, settings=_late_settings()))
        got += [(line["partition"], line["offset"]) for line in page if line["type"] == "event"]
        if page[-1]["type"] == "end":
            break
        resume = decode_cursor(cursor=page[-1]["cursor"], query=query)
        rescans += any(r.scan_next < r.next for r in resume.positions.values())
    assert got == [(e[1], e[2]) for e in expected]
    assert rescans, "no page had to scan again"
