"""Replay a topic's events between two timestamps, merged across partitions in timestamp order.

Backs ``GET /api/events/replay``, ``GET /api/jobs/{job_id}/events``, ``cosmic replay`` and
the replay benchmark. A replay reads with its own consumer (no group: it never joins or
commits for the app's consumer group) and, per partition:

* starts at ``offsets_for_times(start)`` (the first record with a timestamp >= start) or at
  the cursor's position, and stops before ``offsets_for_times(end)`` (or the high-water mark
  taken when the replay opened), so records produced later never extend it;
* keeps only records with ``start <= timestamp < end`` (the window is half-open), whose key
  and decoded event match the filters (``job_id``, ``event_type``, ``user_id``).

Records are merged with a heap on ``(timestamp, partition, offset)``: the output is in
timestamp order, ties broken by partition then offset. The timestamp is the Kafka record's
(the service produces each event with its event time). A record that does not decode gives
an ``error`` line naming its position and the reason; the replay goes on.

Output lines (dicts; NDJSON over HTTP and on the CLI):

* ``{"type": "event", "topic", "partition", "offset", "timestamp", "event": {...}}``
* ``{"type": "error", "topic", "partition", "offset", "timestamp", "reason"}``
* last line: ``{"type": "end", "events": n}`` when the window is exhausted, or
  ``{"type": "cursor", "events": n, "cursor": "..."}`` when ``limit`` events were sent and
  more records remain: send the cursor back (same topic, window and filters) for the rest.
  Both carry ``earliest_available`` (ISO time of the oldest retained record) when ``start``
  lies before it.

The cursor is opaque: base64url of JSON ``{"v": 1, "d": <digest of topic, window and
filters>, "p": {partition: next offset}}``; one made for another topic, window or filter set
is refused (:class:`ReplayError`, field ``cursor``). Records out of timestamp order within a
partition (a late event produced after the end of the window) may fall after the end offset
and are then not replayed. Likewise, ``offsets_for_times`` answers the *first* offset whose
timestamp is >= the target, so a record stamped at or after the window's end that precedes
the window's records in a partition (older events back-filled after newer ones) ends that
partition's part of the window there, possibly before its first in-window record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import heapq
import json
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from app.codecs import format_epoch_ms
from app.errors import CosmicError, EventDecodeError
from app.models import TOPIC_EVENTS
from app.settings import Settings
from app.topic_reader import TopicReadError, topic_partitions
from app.topic_specs import spec_by_name

#: Most events one replay request may ask for with ``limit``.
MAX_LIMIT = 1_000_000
#: A replay that makes no progress for this long fails (the broker stopped answering).
STALL_SECONDS = 60.0
CURSOR_VERSION = 1


class ReplayError(CosmicError):
    """A replay request that cannot be served as asked (HTTP 400): names the field."""

    def __init__(self, reason: str, *, field: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {"error": "invalid replay request", "field": self.field, "reason": self.reason}


class ReplayUnavailable(CosmicError):
    """Kafka could not be read (HTTP 503)."""


# -- request ------------------------------------------------------------------------------------
def parse_time(*, value: str, field: str) -> int:
    """ISO 8601 date-time (``Z``/offset; naive = UTC) or epoch milliseconds → epoch ms."""
    text = value.strip()
    if not text:
        raise ReplayError("required: an ISO 8601 date-time such as 2024-05-01T12:00:00Z", field=field)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ReplayError(f"not an ISO 8601 date-time (e.g. 2024-05-01T12:00:00Z): {value!r}", field=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


#: Epoch milliseconds → ISO 8601 UTC with milliseconds and ``Z``.
format_ms = format_epoch_ms


@dataclass(frozen=True, kw_only=True)
class ReplayQuery:
    """What to replay: ``topic`` (unprefixed), window ``[start_ms, end_ms)`` and filters."""

    topic: str
    start_ms: int
    end_ms: int
    job_id: str | None = None
    event_type: str | None = None
    user_id: str | None = None
    limit: int | None = None
    cursor: str | None = None

    def digest(self) -> str:
        """What a cursor must match: topic, window and filters (not limit)."""
        data = [self.topic, self.start_ms, self.end_ms, self.job_id, self.event_type, self.user_id]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]

    def restricted_to(self, user_id: str) -> "ReplayQuery":
        return replace(self, user_id=user_id)


def known_topics() -> tuple[str, ...]:
    return tuple(TOPIC_EVENTS)


def parse_query(*, params: Mapping[str, str], topic_prefix: str = "") -> ReplayQuery:
    """Query parameters (``topic``, ``start``, ``end``, ``job_id``, ``event_type``,
    ``user_id``, ``limit``, ``cursor``) → a checked :class:`ReplayQuery`."""
    topic = (params.get("topic") or "").strip()
    if topic_prefix and topic.startswith(topic_prefix):
        topic = topic[len(topic_prefix):]
    if topic not in TOPIC_EVENTS:
        raise ReplayError(f"unknown topic {topic!r}; known: {', '.join(TOPIC_EVENTS)}", field="topic")
    if params.get("start") is None:
        raise ReplayError("required: an ISO 8601 date-time such as 2024-05-01T12:00:00Z", field="start")
    if params.get("end") is None:
        raise ReplayError("required: an ISO 8601 date-time such as 2024-05-01T13:00:00Z", field="end")
    start_ms = parse_time(value=params["start"], field="start")
    end_ms = parse_time(value=params["end"], field="end")
    if end_ms < start_ms:
        raise ReplayError(f"end ({format_ms(end_ms)}) is before start ({format_ms(start_ms)})", field="end")
    event_type = params.get("event_type") or None
    names = [cls.__name__ for cls in TOPIC_EVENTS[topic]]
    if event_type is not None and event_type not in names:
        raise ReplayError(f"{event_type!r} is not an event type of {topic}; known: {', '.join(names)}",
                          field="event_type")
    limit: int | None = None
    raw_limit = params.get("limit")
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)  # type: ignore[arg-type]
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise ReplayError(f"must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}", field="limit")
    return ReplayQuery(
        topic=topic, start_ms=start_ms, end_ms=end_ms, job_id=params.get("job_id") or None,
        event_type=event_type, user_id=params.get("user_id") or None, limit=limit,
        cursor=params.get("cursor") or None,
    )


# -- cursor -------------------------------------------------------------------------------------
def encode_cursor(*, query: ReplayQuery, positions: Mapping[int, int]) -> str:
    data = {"v": CURSOR_VERSION, "d": query.digest(), "p": {str(p): o for p, o in sorted(positions.items())}}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(*, cursor: str, query: ReplayQuery) -> dict[int, int]:
    """The per-partition next offsets of ``cursor``; ReplayError unless it belongs to ``query``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        positions = {int(p): int(o) for p, o in data["p"].items()}
        version, digest = data["v"], data["d"]
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise ReplayError("not a cursor returned by a replay", field="cursor") from None
    if version != CURSOR_VERSION:
        raise ReplayError(f"cursor version {version!r} is not supported", field="cursor")
    if digest != query.digest():
        raise ReplayError("the cursor belongs to another topic, window or filter set", field="cursor")
    if any(o < 0 for o in positions.values()):
        raise ReplayError("not a cursor returned by a replay", field="cursor")
    return positions


# -- replay -------------------------------------------------------------------------------------
def key_partition(*, key: str, partitions: list[int]) -> int:
    """The partition the default (murmur2) partitioner gives ``key``, as producers use."""
    ordered = sorted(partitions)
    return DefaultPartitioner()(key.encode(), ordered, ordered)


@dataclass(kw_only=True)
class _Partition:
    tp: TopicPartition
    start: int
    stop: int
    buffer: deque = field(default_factory=deque)

    @property
    def partition(self) -> int:
        return self.tp.partition


class Replay:
    """One replay: ``await open()``, then ``async for line in lines()``, then ``close()``
    (or ``async with open_replay(...)``)."""

    def __init__(self, *, settings: Settings, query: ReplayQuery, codecs: Any) -> None:
        self.settings = settings
        self.query = query
        self.codec = codecs.for_topic(query.topic)
        self.topic_name = settings.topic_prefix + query.topic
        self.consumer: AIOKafkaConsumer | None = None
        self.parts: list[_Partition] = []
        #: Timestamp (ms) of the oldest retained record, or None for an empty topic.
        self.earliest_ms: int | None = None
        self._key_filter = (
            query.job_id.encode() if query.job_id and spec_by_name(query.topic).key == "job_id" else None
        )

    @property
    def before_retained(self) -> bool:
        """Whether the window starts before the oldest retained record."""
        return self.earliest_ms is not None and self.query.start_ms < self.earliest_ms

    async def open(self) -> None:
        try:
            partitions = await topic_partitions(bootstrap=self.settings.kafka_bootstrap, topic=self.topic_name)
        except TopicReadError as exc:
            raise ReplayUnavailable(str(exc)) from exc
        cursor = (decode_cursor(cursor=self.query.cursor, query=self.query)
                  if self.query.cursor else None)
        if self._key_filter is not None:
            partitions = [key_partition(key=self.query.job_id or "", partitions=partitions)]
        if cursor is not None and set(cursor) != set(partitions):
            raise ReplayError("the cursor names other partitions than the topic has", field="cursor")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(consumer.start(), STALL_SECONDS)
        except (KafkaError, asyncio.TimeoutError, OSError) as exc:
            raise ReplayUnavailable(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc!r}") from exc
        self.consumer = consumer
        try:
            await self._plan(partitions=partitions, cursor=cursor)
        except KafkaError as exc:
            await self.close()
            raise ReplayUnavailable(f"cannot read the offsets of {self.topic_name}: {exc!r}") from exc
        except BaseException:
            await self.close()
            raise

    async def _plan(self, *, partitions: list[int], cursor: dict[int, int] | None) -> None:
        assert self.consumer is not None
        tps = [TopicPartition(self.topic_name, p) for p in partitions]
        consumer = self.consumer
        consumer.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.offsets_for_times({tp: 0 for tp in tps})
        stamps = [found.timestamp for found in firsts.values() if found is not None]
        self.earliest_ms = min(stamps) if stamps else None
        starts = await consumer.offsets_for_times({tp: self.query.start_ms for tp in tps})
        stops = await consumer.offsets_for_times({tp: self.query.end_ms for tp in tps})
        for tp in tps:
            end = ends[tp]
            stop = min(stops[tp].offset, end) if stops[tp] is not None else end
            start = starts[tp].offset if starts[tp] is not None else end
            if cursor is not None:
                start = cursor[tp.partition]
            start = max(start, beginnings[tp])
            self.parts.append(_Partition(tp=tp, start=start, stop=stop))
            if start < stop:
                consumer.seek(tp, start)
            else:
                consumer.pause(tp)  # nothing to read: never fetch it

    async def close(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    async def __aenter__(self) -> "Replay":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _trailer(self, *, kind: str, events: int, positions: dict[int, int]) -> dict[str, Any]:
        line: dict[str, Any] = {"type": kind, "events": events}
        if kind == "cursor":
            line["cursor"] = encode_cursor(query=self.query, positions=positions)
        if self.before_retained:
            line["earliest_available"] = format_ms(self.earliest_ms)  # type: ignore[arg-type]
        return line

    @staticmethod
    def _error(record: Any, reason: str) -> dict[str, Any]:
        return {"type": "error", "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "timestamp": format_ms(record.timestamp), "reason": reason}

    def _line(self, record: Any) -> dict[str, Any] | None:
        """The output line of ``record``, or None when a filter drops it."""
        query = self.query
        if not query.start_ms <= record.timestamp < query.end_ms:
            return None
        if self._key_filter is not None and record.key != self._key_filter:
            return None
        if record.value is None:
            return self._error(record, "record has no value (tombstone)")
        try:
            event = self.codec.decode_json(record.value)
        except EventDecodeError as exc:
            return self._error(record, f"undecodable record: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bad record must never end the replay
            return self._error(record, f"undecodable record: {exc!r}")
        if query.event_type is not None and event["event_type"] != query.event_type:
            return None
        if query.job_id is not None and event.get("job_id") != query.job_id:
            return None
        if query.user_id is not None and event["user_id"] != query.user_id:
            return None
        return {"type": "event", "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "timestamp": format_ms(record.timestamp), "event": event}

    async def _fill(self, starving: set[int]) -> None:
        """Fetch until every partition of ``starving`` has buffered records or is done."""
        assert self.consumer is not None
        by_partition = {p.partition: p for p in self.parts}
        deadline = time.monotonic() + STALL_SECONDS
        while starving:
            tps = [by_partition[p].tp for p in starving]
            try:
                batch = await self.consumer.getmany(*tps, timeout_ms=500, max_records=5000)
            except KafkaError as exc:
                raise ReplayUnavailable(f"reading {self.topic_name} failed: {exc!r}") from exc
            for tp, records in batch.items():
                part = by_partition[tp.partition]
                part.buffer.extend(r for r in records if r.offset < part.stop)
            for p in list(starving):
                part = by_partition[p]
                if part.buffer:
                    starving.discard(p)
                elif await self.consumer.position(part.tp) >= part.stop:
                    starving.discard(p)
                    self.consumer.pause(part.tp)  # done: stop prefetching past the window
            if batch:
                deadline = time.monotonic() + STALL_SECONDS
            elif time.monotonic() > deadline:
                raise ReplayUnavailable(
                    f"no progress reading {self.topic_name} partitions {sorted(starving)} for {STALL_SECONDS:.0f} s")

    async def lines(self) -> AsyncIterator[dict[str, Any]]:
        """Event and error lines in timestamp order, then the trailer (``end`` or ``cursor``)."""
        if self.consumer is None:
            raise ReplayUnavailable("replay not opened")
        positions = {p.partition: p.start for p in self.parts}
        live = {p.partition: p for p in self.parts if p.start < p.stop}
        heap: list[tuple[int, int, int]] = []
        starving = set(live)
        limit = self.query.limit
        events = 0
        while True:
            if starving:
                filled = set(starving)
                await self._fill(starving)
                for p in filled:
                    part = live[p]
                    if part.buffer:
                        head = part.buffer[0]
                        heapq.heappush(heap, (head.timestamp, p, head.offset))
            if not heap:
                break
            _, p, _ = heapq.heappop(heap)
            part = live[p]
            record = part.buffer.popleft()
            positions[p] = record.offset + 1
            if part.buffer:
                head = part.buffer[0]
                heapq.heappush(heap, (head.timestamp, p, head.offset))
            elif positions[p] < part.stop:
                starving.add(p)
            line = self._line(record)
            if line is None:
                continue
            if line["type"] == "event":
                events += 1
            yield line
            if limit is not None and events >= limit:
                if any(positions[q] < live_part.stop for q, live_part in live.items()):
                    yield self._trailer(kind="cursor", events=events, positions=positions)
                    return
        yield self._trailer(kind="end", events=events, positions=positions)


def open_replay(*, settings: Settings, query: ReplayQuery, codecs: Any) -> Replay:
    """``async with open_replay(...) as replay: async for line in replay.lines(): ...``"""
    return Replay(settings=settings, query=query, codecs=codecs)


async def run_replay_cli(
    *, settings: Settings, params: Mapping[str, str], as_json: bool, echo: Any, echo_err: Any,
) -> int:
    """``cosmic replay``: print the replay; exit status 0, or 2 for a bad request (named field)."""
    from app.codecs import Codecs

    try:
        query = parse_query(params=params, topic_prefix=settings.topic_prefix)
        replay = open_replay(settings=settings, query=query, codecs=Codecs(settings=settings))
        await replay.open()
    except ReplayError as exc:
        echo_err(f"error: --{exc.field.replace('_', '-')}: {exc.reason}")
        return 2
    try:
        if replay.before_retained and not as_json:
            echo_err(f"note: the window starts before the oldest retained record "
                     f"({format_ms(replay.earliest_ms)})")  # type: ignore[arg-type]
        async for line in replay.lines():
            if as_json:
                echo(json.dumps(line, separators=(",", ":")))
            elif line["type"] == "event":
                event = line["event"]
                subject = event.get("job_id") or event.get("resource_id") or event.get("component") or ""
                echo(f"{line['timestamp']}  {line['partition']}:{line['offset']}  {event['event_type']}  "
                     f"{subject}  {event['event_id']}")
            elif line["type"] == "error":
                echo_err(f"skipped {line['topic']}@{line['partition']}:{line['offset']}: {line['reason']}")
            elif line["type"] == "cursor":
                echo_err(f"replay: {line['events']} events; more remain: --cursor {line['cursor']}")
            else:
                echo_err(f"replay: {line['events']} events")
    finally:
        await replay.close()
    return 0
