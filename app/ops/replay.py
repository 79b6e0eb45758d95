"""Replay a topic's events between two timestamps, merged across partitions in timestamp order.

Backs ``GET /api/events/replay``, ``GET /api/jobs/{job_id}/events``, ``cosmic replay`` and
the replay benchmark. A replay reads with its own consumer (no group: it never joins or
commits for the app's consumer group) and, per partition:

* starts at ``offsets_for_times(start)`` or at the cursor's positions, and stops before
  ``offsets_for_times(end + slack)`` (or the high-water mark taken when the replay opened),
  so records produced later never extend it;
* keeps only records with ``start <= timestamp < end`` (the window is half-open), whose key
  and decoded event match the filters (``job_id``, ``event_type``, ``user_id``).

**Why the window is exact.** The slack is COSMIC_MAX_EVENT_LATENESS + COSMIC_MAX_CLOCK_SKEW.
Every publishing path refuses an event stamped more than the lateness in the past or the skew
in the future (``app.core.validation``), and the consumers of the ingest topics dead-letter a
record stamped more than the slack before the newest one of its partition
(``app.worker.streams``): so a record that follows, in its partition, one stamped ``t`` is stamped
at least ``t - slack``. The start is exact as it is: ``offsets_for_times(start)`` is the
first offset stamped ``>= start``, every earlier record is stamped before it. At the end, a
record after the first one stamped ``>= end + slack`` is stamped ``>= end``: none of the
window is left out, however late it was posted (within the bound).

**Order.** The timestamp is the Kafka record's (the service produces each event with its
event time). Within a partition records may be up to the slack out of time order, so each
partition's records are held until the partition has been read past their timestamp plus the
slack (or to its end); then the partitions are merged on ``(timestamp, partition, offset)``:
the output is in timestamp order, ties broken by partition then offset. What a replay holds
in memory is the matching records of one slack's worth of each partition. A record that
does not decode gives an ``error`` line naming its position and the reason; the replay goes
on.

Output lines (dicts; NDJSON over HTTP and on the CLI):

* ``{"type": "event", "topic", "partition", "offset", "timestamp", "event": {...}}``
* ``{"type": "error", "topic", "partition", "offset", "timestamp", "reason"}``
* last line: ``{"type": "end", "events": n}`` when the window is exhausted, or
  ``{"type": "cursor", "events": n, "cursor": "..."}`` when ``limit`` events were sent and
  more records remain: send the cursor back (same topic, window and filters) for the rest.
  Both carry ``earliest_available`` (ISO time of the oldest retained record) when ``start``
  lies before it.

The cursor is opaque: base64url of JSON ``{"v": 2, "d": <digest of topic, window and
filters>, "p": {partition: first offset not sent}, "k": [timestamp, partition, offset] of the
last line sent}``: the next page reads from those offsets and leaves out what sorts at or
before ``k`` (sent already), so pages are exact too. One made for another topic, window or
filter set is refused (:class:`ReplayError`, field ``cursor``).
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

from app.core.errors import CosmicError, EventDecodeError
from app.core.models import TOPIC_EVENTS
from app.core.settings import Settings
from app.core.timeutil import format_epoch_ms, utc_ms
from app.core.topic_specs import spec_by_name, unprefixed
from app.ops.topic_reader import TopicReadError, topic_partitions

#: Most events one replay request may ask for with ``limit``.
MAX_LIMIT = 1_000_000
#: A replay that makes no progress for this long fails (the broker stopped answering).
STALL_SECONDS = 60.0
CURSOR_VERSION = 2


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
    return utc_ms(moment)


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
    topic = unprefixed(topic=(params.get("topic") or "").strip(), prefix=topic_prefix)
    if topic not in TOPIC_EVENTS:
        raise ReplayError(f"unknown topic {topic!r}; known: {', '.join(TOPIC_EVENTS)}", field="topic")
    if params.get("start") is None:
        raise ReplayError("required: an ISO 8601 date-time such as 2024-05-01T12:00:00Z", field="start")
    if params.get("end") is None:
        raise ReplayError("required: an ISO 8601 date-time such as 2024-05-01T13:00:00Z", field="end")
    start_ms = parse_time(value=params["start"], field="start")
    end_ms = parse_time(value=params["end"], field="end")
    if end_ms < start_ms:
        raise ReplayError(f"end ({format_epoch_ms(end_ms)}) is before start ({format_epoch_ms(start_ms)})", field="end")
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
#: Late records found ahead but not sent that a cursor names one by one; beyond this many the
#: next page scans for them again from the oldest one.
MAX_CURSOR_LATE = 500


@dataclass(frozen=True, kw_only=True)
class PartitionResume:
    """Where a page left one partition: the in-order reader's next offset and the newest
    timestamp before it, and the same for the look-ahead scanner."""

    next: int
    frontier: int | None
    scan_next: int
    scan_frontier: int | None


@dataclass(frozen=True, kw_only=True)
class ReplayCursor:
    """Where the next page starts: per partition its readers' positions, the sort key
    ``(timestamp, partition, offset)`` of the last line sent (None: nothing sent), and the late
    records found ahead but not sent yet."""

    positions: dict[int, PartitionResume]
    after: tuple[int, int, int] | None = None
    #: (timestamp, partition, offset, newest timestamp before it) of each.
    late: tuple[tuple[int, int, int, int | None], ...] = ()


def encode_cursor(*, query: ReplayQuery, cursor: ReplayCursor) -> str:
    data: dict[str, Any] = {
        "v": CURSOR_VERSION, "d": query.digest(),
        "p": {str(p): [r.next, r.frontier, r.scan_next, r.scan_frontier] for p, r in sorted(cursor.positions.items())},
    }
    if cursor.after is not None:
        data["k"] = list(cursor.after)
    if cursor.late:
        data["l"] = [list(key) for key in cursor.late]
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _key(value: Any) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(value)
    return int(value[0]), int(value[1]), int(value[2])


def _late_key(value: Any) -> tuple[int, int, int, int | None]:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError(value)
    return int(value[0]), int(value[1]), int(value[2]), _stamp(value[3])


def _stamp(value: Any) -> int | None:
    return None if value is None else int(value)


def decode_cursor(*, cursor: str, query: ReplayQuery) -> ReplayCursor:
    """The positions of ``cursor``; ReplayError unless it belongs to ``query``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        version, digest = data["v"], data["d"]
        if version != CURSOR_VERSION:
            raise ReplayError(f"cursor version {version!r} is not supported (made by an older version of the "
                              "service: start the replay again without it)", field="cursor")
        positions = {}
        for p, value in data["p"].items():
            if not isinstance(value, list) or len(value) != 4:
                raise ValueError(value)
            positions[int(p)] = PartitionResume(next=int(value[0]), frontier=_stamp(value[1]),
                                                scan_next=int(value[2]), scan_frontier=_stamp(value[3]))
        after = None if data.get("k") is None else _key(data["k"])
        late = tuple(_late_key(item) for item in data.get("l", ()))
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
        raise ReplayError("not a cursor returned by a replay", field="cursor") from None
    if digest != query.digest():
        raise ReplayError("the cursor belongs to another topic, window or filter set", field="cursor")
    if any(r.next < 0 or r.scan_next < 0 for r in positions.values()) or any(k[2] < 0 for k in late):
        raise ReplayError("not a cursor returned by a replay", field="cursor")
    if any(k[1] not in positions for k in late):
        raise ReplayError("not a cursor returned by a replay", field="cursor")
    return ReplayCursor(positions=positions, after=after, late=late)


# -- replay -------------------------------------------------------------------------------------
def key_partition(*, key: str, partitions: list[int]) -> int:
    """The partition the default (murmur2) partitioner gives ``key``, as producers use."""
    ordered = sorted(partitions)
    return DefaultPartitioner()(key.encode(), ordered, ordered)


@dataclass(kw_only=True)
class _Partition:
    """One partition's part of the window and its two readers' state.

    A record is *late* if an earlier record of the partition (since the window's start
    offset) is stamped later; both readers tell the same records late, because each starts
    from a position with the newest timestamp before it (``frontier``). The in-order reader
    queues the partition's in-window records that are not late (their timestamps never
    decrease); the scanner, which runs ahead, finds the late ones."""

    tp: TopicPartition
    start: int
    stop: int
    next: int = -1
    frontier: int | None = None
    #: In-order in-window records read and not sent: (timestamp, offset, record, frontier before it).
    queue: deque = field(default_factory=deque)
    done: bool = False
    scan_next: int = -1
    scan_frontier: int | None = None
    scan_done: bool = False

    def __post_init__(self) -> None:
        if self.next < 0:
            self.next = self.start
        if self.scan_next < 0:
            self.scan_next = self.start

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
        #: The in-order reader's consumer, and the look-ahead scanner's.
        self.consumer: AIOKafkaConsumer | None = None
        self.scanner: AIOKafkaConsumer | None = None
        self.parts: list[_Partition] = []
        #: How far a partition's records may be out of time order (ms): the lateness bound.
        self.slack_ms = int((settings.max_event_lateness + settings.max_clock_skew) * 1000)
        #: The sort key of the last line the previous page sent (from the cursor).
        self.resume_after: tuple[int, int, int] | None = None
        #: Late records a previous page found ahead and did not send (from the cursor).
        self.resume_late: tuple[tuple[int, int, int, int | None], ...] = ()
        #: Timestamp (ms) of the oldest retained record, or None for an empty topic.
        self.earliest_ms: int | None = None
        #: Late in-window records found, not sent: (timestamp, partition, offset, _Held).
        self._late: list[tuple[int, int, int, _Held]] = []
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
        resumed = decode_cursor(cursor=self.query.cursor, query=self.query) if self.query.cursor else None
        if self._key_filter is not None:
            partitions = [key_partition(key=self.query.job_id or "", partitions=partitions)]
        if resumed is not None and set(resumed.positions) != set(partitions):
            raise ReplayError("the cursor names other partitions than the topic has", field="cursor")
        try:
            self.consumer = await self._consumer()
            self.scanner = await self._consumer()
        except BaseException:
            await self.close()
            raise
        try:
            await self._plan(partitions=partitions)
            if resumed is not None:
                self.resume(resumed)
        except KafkaError as exc:
            await self.close()
            raise ReplayUnavailable(f"cannot read the offsets of {self.topic_name}: {exc!r}") from exc
        except BaseException:
            await self.close()
            raise

    async def _consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await asyncio.wait_for(consumer.start(), STALL_SECONDS)
        except (KafkaError, asyncio.TimeoutError, OSError) as exc:
            await consumer.stop()
            raise ReplayUnavailable(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc!r}") from exc
        return consumer

    async def _plan(self, *, partitions: list[int]) -> None:
        assert self.consumer is not None and self.scanner is not None
        tps = [TopicPartition(self.topic_name, p) for p in partitions]
        consumer = self.consumer
        consumer.assign(tps)
        self.scanner.assign(tps)
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.offsets_for_times({tp: 0 for tp in tps})
        stamps = [found.timestamp for found in firsts.values() if found is not None]
        self.earliest_ms = min(stamps) if stamps else None
        starts = await consumer.offsets_for_times({tp: self.query.start_ms for tp in tps})
        stops = await consumer.offsets_for_times({tp: self.query.end_ms + self.slack_ms for tp in tps})
        for tp in tps:
            end = ends[tp]
            stop = min(stops[tp].offset, end) if stops[tp] is not None else end
            start = starts[tp].offset if starts[tp] is not None else end
            self.parts.append(_Partition(tp=tp, start=max(start, beginnings[tp]), stop=stop))

    def resume(self, cursor: ReplayCursor) -> None:
        """Continue where the page that returned ``cursor`` stopped."""
        self.resume_after, self.resume_late = cursor.after, cursor.late
        for part in self.parts:
            at = cursor.positions.get(part.partition)
            if at is not None:
                part.next, part.frontier = max(at.next, part.start), at.frontier
                part.scan_next, part.scan_frontier = max(at.scan_next, part.start), at.scan_frontier

    async def close(self) -> None:
        for name in ("consumer", "scanner"):
            consumer = getattr(self, name)
            if consumer is not None:
                setattr(self, name, None)
                await consumer.stop()

    async def __aenter__(self) -> "Replay":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _trailer(self, *, kind: str, events: int, cursor: ReplayCursor | None = None) -> dict[str, Any]:
        line: dict[str, Any] = {"type": kind, "events": events}
        if kind == "cursor" and cursor is not None:
            line["cursor"] = encode_cursor(query=self.query, cursor=cursor)
        if self.before_retained:
            line["earliest_available"] = format_epoch_ms(self.earliest_ms)  # type: ignore[arg-type]
        return line

    @staticmethod
    def _error(record: Any, reason: str) -> dict[str, Any]:
        return {"type": "error", "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "timestamp": format_epoch_ms(record.timestamp), "reason": reason}

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
                "timestamp": format_epoch_ms(record.timestamp), "event": event}

    def _wanted(self, record: Any) -> bool:
        """In the window, of the job asked for (by key), and not sent by an earlier page."""
        stamp = record.timestamp
        if not self.query.start_ms <= stamp < self.query.end_ms:
            return False
        if self._key_filter is not None and record.key != self._key_filter:
            return False
        return self.resume_after is None or (stamp, record.partition, record.offset) > self.resume_after

    async def _fetch(self, consumer: Any, parts: list[_Partition], *, scanning: bool) -> None:
        """One round of reading for ``parts`` (in-order reader or scanner); a partition that has
        reached its stop offset is done. Fails when nothing progresses for STALL_SECONDS."""
        deadline = time.monotonic() + STALL_SECONDS
        by_partition = {p.partition: p for p in parts}
        while True:
            try:
                batch = await consumer.getmany(*(p.tp for p in parts), timeout_ms=500, max_records=5000)
            except KafkaError as exc:
                raise ReplayUnavailable(f"reading {self.topic_name} failed: {exc!r}") from exc
            for tp, records in batch.items():
                part = by_partition[tp.partition]
                if scanning:
                    self._scan(part, records)
                else:
                    self._read(part, records)
            progressed = bool(batch)
            for part in parts:
                position = part.scan_next if scanning else part.next
                finished = part.scan_done if scanning else part.done
                if finished or position >= part.stop or await consumer.position(part.tp) >= part.stop:
                    progressed = True
                    if scanning:
                        part.scan_done = True
                    else:
                        part.done = True
                    consumer.pause(part.tp)  # done: stop prefetching past the window
            if progressed:
                return
            if time.monotonic() > deadline:
                raise ReplayUnavailable(f"no progress reading {self.topic_name} partitions "
                                        f"{sorted(by_partition)} for {STALL_SECONDS:.0f} s")

    def _read(self, part: _Partition, records: list[Any]) -> None:
        """The in-order reader: queue the partition's wanted records that are not late."""
        for record in records:
            if record.offset < part.next:
                continue
            if record.offset >= part.stop:
                break
            part.next = record.offset + 1
            before = part.frontier
            if before is not None and record.timestamp < before:
                continue  # late: the scanner finds it
            part.frontier = record.timestamp
            if self._wanted(record):
                part.queue.append((record.timestamp, record.offset, record, before))
            if record.timestamp >= self.query.end_ms:
                part.done = True  # what follows is either late (the scanner's) or after the window
                break

    def _scan(self, part: _Partition, records: list[Any]) -> None:
        """The scanner: hold the partition's wanted late records."""
        for record in records:
            if record.offset < part.scan_next:
                continue
            if record.offset >= part.stop:
                break
            part.scan_next = record.offset + 1
            before = part.scan_frontier
            if before is None or record.timestamp >= before:
                part.scan_frontier = record.timestamp
                if record.timestamp - self.slack_ms >= self.query.end_ms:
                    part.scan_done = True  # nothing later can be late enough to fall in the window
                    break
            elif self._wanted(record):
                heapq.heappush(self._late, (record.timestamp, record.partition, record.offset,
                                            _Held(record=record, frontier=before)))

    async def _refetch_late(self) -> None:
        """Read back, one by one, the late records a previous page found ahead and did not send."""
        assert self.scanner is not None
        by_partition = {p.partition: p for p in self.parts}
        for stamp, partition, offset, frontier in self.resume_late:
            part = by_partition[partition]
            self.scanner.seek(part.tp, offset)
            deadline = time.monotonic() + STALL_SECONDS
            while True:
                batch = await self.scanner.getmany(part.tp, timeout_ms=500, max_records=1)
                records = [r for r in batch.get(part.tp, ()) if r.offset == offset]
                if records:
                    record = records[0]
                    heapq.heappush(self._late, (record.timestamp, partition, offset,
                                                _Held(record=record, frontier=frontier)))
                    break
                if any(r.offset > offset for r in batch.get(part.tp, ())):
                    break  # deleted by retention since
                if time.monotonic() > deadline:
                    raise ReplayUnavailable(f"cannot read back {self.topic_name}[{partition}]@{offset}")

    def _cursor(self, after: tuple[int, int, int] | None) -> ReplayCursor:
        """Where the next page starts."""
        late = sorted(self._late)
        rescan: dict[int, tuple[int, int | None]] = {}
        if len(late) > MAX_CURSOR_LATE:  # too many to name: scan again from the oldest of each partition
            for _, partition, offset, held in late:
                if partition not in rescan or offset < rescan[partition][0]:
                    rescan[partition] = (offset, held.frontier)
            late = []
        positions = {}
        for part in self.parts:
            if part.queue:
                _, offset, _, before = part.queue[0]
                next_at, frontier = offset, before
            else:
                next_at, frontier = part.next, part.frontier
            scan_at, scan_frontier = rescan.get(part.partition, (part.scan_next, part.scan_frontier))
            positions[part.partition] = PartitionResume(next=next_at, frontier=frontier, scan_next=scan_at,
                                                        scan_frontier=scan_frontier)
        return ReplayCursor(positions=positions, after=after,
                            late=tuple((stamp, p, offset, held.frontier) for stamp, p, offset, held in late))

    async def lines(self) -> AsyncIterator[dict[str, Any]]:
        """Event and error lines in timestamp order, then the trailer (``end`` or ``cursor``)."""
        if self.consumer is None or self.scanner is None:
            raise ReplayUnavailable("replay not opened")
        if self.resume_late:
            await self._refetch_late()
        for part in self.parts:
            part.done, part.scan_done = part.next >= part.stop, part.scan_next >= part.stop
            if part.done:
                self.consumer.pause(part.tp)
            else:
                self.consumer.seek(part.tp, part.next)
            if part.scan_done:
                self.scanner.pause(part.tp)
            else:
                self.scanner.seek(part.tp, part.scan_next)
        slack, late, limit = self.slack_ms, self._late, self.query.limit
        heads: list[tuple[int, int, int]] = []  # (timestamp, partition, offset) of each non-empty queue's head
        queued: set[int] = set()
        by_partition = {p.partition: p for p in self.parts}
        events = 0
        last = self.resume_after
        while True:
            reading = [p for p in self.parts if not p.done and not p.queue]
            if reading:
                await self._fetch(self.consumer, reading, scanning=False)
            for part in self.parts:
                if part.queue and part.partition not in queued:
                    stamp, offset, _, _ = part.queue[0]
                    heapq.heappush(heads, (stamp, part.partition, offset))
                    queued.add(part.partition)
            if reading and any(not p.done and not p.queue for p in reading):
                continue
            first = min(heads[0] if heads else None, late[0][:3] if late else None,
                        key=lambda k: (k is None, k))
            # The first candidate can be sent once no partition can still give an earlier one:
            # the scanner has read each past it by more than the slack, or to its end.
            scanning = [p for p in self.parts if not p.scan_done
                        and (first is None or p.scan_frontier is None or p.scan_frontier - slack <= first[0])]
            if scanning:
                await self._fetch(self.scanner, scanning, scanning=True)
                continue
            if first is None:
                break
            if late and late[0][:3] == first:
                record = heapq.heappop(late)[3].record
            else:
                _, partition, _ = heapq.heappop(heads)
                part = by_partition[partition]
                record = part.queue.popleft()[2]
                queued.discard(partition)
            line = self._line(record)
            if line is None:
                continue
            last = first
            if line["type"] == "event":
                events += 1
            yield line
            if limit is not None and events >= limit:
                if late or any(p.queue or not p.done or not p.scan_done for p in self.parts):
                    yield self._trailer(kind="cursor", events=events, cursor=self._cursor(last))
                    return
        yield self._trailer(kind="end", events=events)


@dataclass(slots=True)
class _Held:
    """A late record held for the merge, with the newest timestamp before it in its partition
    (compared by its heap key only, never by itself)."""

    record: Any
    frontier: int | None

    def __lt__(self, other: "_Held") -> bool:  # equal keys cannot happen (offsets are unique)
        return False


def open_replay(*, settings: Settings, query: ReplayQuery, codecs: Any) -> Replay:
    """``async with open_replay(...) as replay: async for line in replay.lines(): ...``"""
    return Replay(settings=settings, query=query, codecs=codecs)


async def run_replay_cli(
    *, settings: Settings, params: Mapping[str, str], as_json: bool, echo: Any, echo_err: Any,
) -> int:
    """``cosmic replay``: print the replay; exit status 0, or 2 for a bad request (named field)."""
    from app.core.codecs import Codecs

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
                     f"({format_epoch_ms(replay.earliest_ms)})")  # type: ignore[arg-type]
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
