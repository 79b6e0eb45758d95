"""The websocket hub: live fan-out of Kafka events to ``/ws`` clients, with recovery from Kafka.

Protocol: ``docs/websocket.md``. The aiohttp side (upgrade, auth, Origin) is
``app/web/ws.py``; this module holds everything that does not depend on aiohttp:

* **Reading.** Every worker's hub reads the source topics (job-lifecycle, job-metrics,
  notifications, system-health) itself, with its own aiokafka consumer *outside any consumer
  group* (all partitions assigned, positioned at the end when the hub starts). So every
  worker sees every event and can serve every channel, whichever worker owns the partitions
  for the agents; no forwarding between workers is needed.
* **Fan-out.** An event frame is serialized once per channel, then offered to each
  subscriber's bounded queue (``put_nowait``); a full queue closes that client with 4008
  (``WS_DROPPED_SLOW``) and never blocks the hub or other clients. One sender task per
  connection writes its queue to the socket.
* **Ownership.** ``job:<id>:…`` channels belong to the job's ``user_id``, learned from the
  job-lifecycle events the hub reads (a bounded LRU) and, for jobs it has not seen, asked
  through ``owner_lookup`` (the worker's own ``GET /api/jobs/{id}``, which Faust routes to
  the worker owning the key — so it works with several workers). An unknown job is refused.
* **Recovery.** A subscription with ``resume`` positions registers first (live frames are
  buffered), snapshots the end offsets, reads the missed records from Kafka with a fresh
  consumer, sends those of the channel, then ``recovered``, then the buffered live frames not
  already sent; a per-partition fence drops live frames the recovery already covered (no gap,
  no duplicate). A position older than the partition's beginning gets ``not_recovered``.

Importing this module does no I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Protocol
from urllib.parse import quote

import mode

from app.core.auth import Principal
from app.core.errors import CosmicError
from app.core.settings import Settings
from app.core.topic_specs import JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS, SYSTEM_HEALTH, spec_by_name
from app.worker.observability import WS_CONNECTIONS, WS_DROPPED_SLOW

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_AUTH = 4001
CLOSE_SLOW = 4008

#: Topics (without prefix) the hub reads.
SOURCE_TOPICS = (JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS, SYSTEM_HEALTH)
#: Most channels one connection may subscribe to.
MAX_SUBSCRIPTIONS = 1000
#: job_id → user_id entries remembered from the job-lifecycle stream.
OWNER_CACHE_SIZE = 200_000
#: Recoveries (each a fresh Kafka consumer) running at once per worker.
MAX_CONCURRENT_RECOVERIES = 8
#: Seconds a recovery may take to read its partitions to their end.
RECOVERY_TIMEOUT = 120.0
#: Records handled between two yields to the event loop (the connections' senders run then).
YIELD_EVERY = 50
#: Longest channel subject (job or user id) accepted.
MAX_ID_LENGTH = 256

TopicPartitionKey = tuple[str, int]
OwnerLookup = Callable[[str, str], Awaitable[Optional[str]]]  # (job_id, caller's token) → user_id


class ChannelError(CosmicError):
    """A refused subscribe/unsubscribe: ``code`` is the error frame's code."""

    def __init__(self, message: str, *, code: str, channel: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.channel = channel


@dataclass(frozen=True, kw_only=True)
class Channel:
    name: str
    kind: str  # job_status | job_metrics | user_notifications | system_alerts | jobs_all
    topic: str  # source topic, without prefix
    subject: str | None = None  # job id or user id


def parse_channel(name: str) -> Channel:
    """The channel named ``name`` (ChannelError ``unknown_channel`` otherwise)."""

    def subject(prefix: str, suffix: str) -> str | None:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            value = name[len(prefix):len(name) - len(suffix)]
            if value.strip() == value and 0 < len(value) <= MAX_ID_LENGTH:
                return value
        return None

    if name == "system:alerts":
        return Channel(name=name, kind="system_alerts", topic=SYSTEM_HEALTH)
    if name == "jobs:all":
        return Channel(name=name, kind="jobs_all", topic=JOB_LIFECYCLE)
    if (job := subject("job:", ":status")) is not None:
        return Channel(name=name, kind="job_status", topic=JOB_LIFECYCLE, subject=job)
    if (job := subject("job:", ":metrics")) is not None:
        return Channel(name=name, kind="job_metrics", topic=JOB_METRICS, subject=job)
    if (user := subject("user:", ":notifications")) is not None:
        return Channel(name=name, kind="user_notifications", topic=NOTIFICATIONS, subject=user)
    raise ChannelError(
        f"unknown channel {name[:300]!r}: expected job:<id>:status, job:<id>:metrics, "
        "user:<id>:notifications, system:alerts or jobs:all", code="unknown_channel", channel=name[:300])


def channels_of(topic: str, event: Mapping[str, Any]) -> list[str]:
    """The channels an event of ``topic`` (without prefix), in its JSON form, is published on."""
    if topic == JOB_LIFECYCLE:
        return [f"job:{event['job_id']}:status", "jobs:all"]
    if topic == JOB_METRICS:
        return [f"job:{event['job_id']}:metrics"]
    if topic == NOTIFICATIONS:
        return [f"user:{event['user_id']}:notifications"] if event.get("user_id") else []
    if topic == SYSTEM_HEALTH and event.get("event_type") == "SystemAlert":
        return ["system:alerts"]
    return []


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), default=str)


def error_frame(*, code: str, message: str, channel: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if channel is not None:
        frame["channel"] = channel
    return dumps(frame)


def event_frame(*, channel: str, topic: str, partition: int, offset: int, timestamp_ms: int | None,
                event: dict[str, Any]) -> str:
    return dumps({"type": "event", "channel": channel,
                  "position": {"topic": topic, "partition": partition, "offset": offset},
                  "timestamp": timestamp_ms, "event": event})


# -- connections ---------------------------------------------------------------------------
@dataclass(eq=False)
class Subscription:
    channel: Channel
    #: While recovering: live frames (tp, offset, text) held until the recovery is sent.
    buffer: list[tuple[TopicPartitionKey, int, str]] | None = None
    #: After a recovery: per partition, the last offset it covered (live frames at or below are
    #: duplicates). None when there is nothing to fence.
    fence: dict[TopicPartitionKey, int] | None = None


class Connection:
    """One authenticated client: a bounded send queue drained by one sender task.

    ``send`` writes one text frame to the socket; ``close`` closes it with a code and reason.
    """

    def __init__(self, *, principal: Principal, send: Callable[[str], Awaitable[None]],
                 close: Callable[[int, str], Awaitable[None]], queue_size: int, token: str = "") -> None:
        self.principal = principal
        self.token = token  # the client's JWT, forwarded to the job-owner lookup
        self._send = send
        self._close = close
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self.close_code: int | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.on_closed: Callable[["Connection"], None] | None = None

    def offer(self, text: str) -> bool:
        """Queue a frame without waiting; a full queue closes the client (4008)."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            WS_DROPPED_SLOW.inc()
            logger.warning("websocket client %s is too slow (%d frames queued): closing with %d",
                           self.principal.user_id, self.queue.maxsize, CLOSE_SLOW)
            self.close(CLOSE_SLOW, "slow consumer: send queue full")
            return False

    async def put(self, text: str) -> None:
        """Queue a frame, waiting for room (recovery: only this client waits)."""
        if not self.closed:
            await self.queue.put(text)

    async def run_sender(self) -> None:
        """Write queued frames to the socket until the connection closes."""
        while not self.closed:
            text = await self.queue.get()
            await self._send(text)

    def close(self, code: int, reason: str) -> None:
        """Stop delivering and close the socket (in the background)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for task in list(self.tasks):
            task.cancel()
        if self.on_closed is not None:
            self.on_closed(self)
        self.spawn(self._close(code, reason))

    def finish(self) -> None:
        """The socket is gone (client closed or the handler ended): stop everything."""
        if not self.closed:
            self.closed = True
            for task in list(self.tasks):
                task.cancel()
        if self.on_closed is not None:
            self.on_closed(self)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("websocket task failed: %r", task.exception())


# -- recovery reading ----------------------------------------------------------------------
class RecoveryReader(Protocol):
    """Reads records of given partitions (a fresh Kafka consumer in production)."""

    async def bounds(self, tps: list[TopicPartitionKey]) -> tuple[dict[TopicPartitionKey, int],
                                                                  dict[TopicPartitionKey, int]]: ...

    def read(self, tp: TopicPartitionKey, start: int, end: int) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


class KafkaRecoveryReader:
    """A consumer outside any group, assigned exactly the partitions to read."""

    def __init__(self, *, bootstrap: str) -> None:
        from aiokafka import AIOKafkaConsumer

        # auto_offset_reset="earliest": see app/ops/topic_reader.py (a reset must never skip).
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="earliest")
        self._started = False

    async def bounds(self, tps: list[TopicPartitionKey]) -> tuple[dict[TopicPartitionKey, int],
                                                                  dict[TopicPartitionKey, int]]:
        from aiokafka import TopicPartition

        if not self._started:
            await asyncio.wait_for(self.consumer.start(), 30)
            self._started = True
        parts = [TopicPartition(t, p) for t, p in tps]
        self.consumer.assign(parts)
        begin = await self.consumer.beginning_offsets(parts)
        end = await self.consumer.end_offsets(parts)
        return ({(tp.topic, tp.partition): o for tp, o in begin.items()},
                {(tp.topic, tp.partition): o for tp, o in end.items()})

    async def read(self, tp: TopicPartitionKey, start: int, end: int) -> AsyncIterator[Any]:
        from aiokafka import TopicPartition

        part = TopicPartition(*tp)
        if start >= end:
            return
        self.consumer.seek(part, start)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {tp[0]}[{tp[1]}] to offset {end} timed out")
            batch = await self.consumer.getmany(part, timeout_ms=500, max_records=500)
            for record in batch.get(part, ()):
                if record.offset >= end:
                    return
                yield record
            if await self.consumer.position(part) >= end:
                return

    async def close(self) -> None:
        if self._started:
            await self.consumer.stop()


# -- the hub -------------------------------------------------------------------------------
class WebsocketHub(mode.Service):
    """Reads the source topics and fans events out to websocket connections."""

    #: The running hub of this process (the /ws view serves through it).
    current: Optional["WebsocketHub"] = None

    def __init__(self, *args: Any, settings: Settings, codecs: Any, owner_lookup: OwnerLookup | None = None,
                 reader_factory: Callable[[], RecoveryReader] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.codecs = codecs
        self.owner_lookup = owner_lookup
        self.reader_factory = reader_factory or (lambda: KafkaRecoveryReader(bootstrap=settings.kafka_bootstrap))
        self.topic_names = {settings.topic_prefix + t: t for t in SOURCE_TOPICS}
        self.subscribers: dict[str, dict[Connection, Subscription]] = {}
        self.connections: set[Connection] = set()
        self.owners: OrderedDict[str, str] = OrderedDict()
        self._topic_subscribers: Counter[str] = Counter()
        self._recovery_slots = asyncio.Semaphore(MAX_CONCURRENT_RECOVERIES)
        self.positioned = asyncio.Event()
        self._consumer: Any = None
        self.events_seen = 0
        self.decode_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        WebsocketHub.current = self
        self.add_future(self._consume_forever())

    async def on_stop(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        closers = [getattr(self.owner_lookup, "close", None)]
        if self._consumer is not None:
            closers.append(self._consumer.stop)
        for close in filter(None, closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        if WebsocketHub.current is self:
            WebsocketHub.current = None

    async def _start_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"{self.settings.app_id}-websocket-hub",
        )
        await asyncio.wait_for(consumer.start(), 30)
        try:
            parts = [TopicPartition(self.settings.topic_prefix + t, p)
                     for t in SOURCE_TOPICS for p in range(spec_by_name(t).partitions)]
            consumer.assign(parts)
            for tp, offset in (await consumer.end_offsets(parts)).items():
                consumer.seek(tp, offset)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _consume_forever(self) -> None:
        from aiokafka.errors import KafkaError

        attempt = 0
        while not self.should_stop and self._consumer is None:
            try:
                self._consumer = await self._start_consumer()
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                attempt += 1
                logger.error("websocket hub cannot read Kafka at %s (%r); retrying", self.settings.kafka_bootstrap, exc)
                await asyncio.sleep(min(2.0 ** attempt, 30.0))
        self.positioned.set()
        logger.info("websocket hub reading %s from their end", ", ".join(self.topic_names))
        while not self.should_stop:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving; the consumer reconnects
                logger.warning("websocket hub read failed (%r); retrying", exc)
                await asyncio.sleep(1)
                continue
            handled = 0
            for records in batches.values():
                for record in records:
                    try:
                        self.handle_record(record)
                    except Exception:  # noqa: BLE001 - one bad record never stops the feed
                        logger.exception("websocket hub could not handle %s[%s]@%s",
                                         record.topic, record.partition, record.offset)
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let the senders drain: a burst must not fill fast clients' queues
            await asyncio.sleep(0)

    # -- live fan-out ------------------------------------------------------------------------
    def decode(self, topic: str, record: Any) -> dict[str, Any] | None:
        """The record's event in its JSON form (what a frame carries: ``decode_json``, without
        building the event record first), or None if it does not decode."""
        try:
            return self.codecs.for_topic(topic).decode_json(record.value)
        except Exception as exc:  # noqa: BLE001 - undecodable records are the agents' DLQ business
            self.decode_errors += 1
            logger.debug("websocket hub skips undecodable %s@%s: %r", record.topic, record.offset, exc)
            return None

    def handle_record(self, record: Any) -> None:
        """Route one consumed record to the subscribers of its channels."""
        topic = self.topic_names.get(record.topic)
        if topic is None or not record.value:
            return
        self.events_seen += 1
        if topic != JOB_LIFECYCLE and not self._topic_subscribers[topic]:
            return  # nobody listens: not even decoded
        event = self.decode(topic, record)
        if event is None:
            return
        if topic == JOB_LIFECYCLE:
            self.learn_owner(job_id=event["job_id"], user_id=event.get("user_id"))
        for name in channels_of(topic, event):
            subs = self.subscribers.get(name)
            if not subs:
                continue
            text = event_frame(channel=name, topic=record.topic, partition=record.partition, offset=record.offset,
                               timestamp_ms=record.timestamp, event=event)
            self.deliver(subs, tp=(record.topic, record.partition), offset=record.offset, text=text)

    def deliver(self, subs: dict[Connection, Subscription], *, tp: TopicPartitionKey, offset: int, text: str) -> None:
        """Offer one serialized frame to every subscriber (buffered while it recovers)."""
        for conn, sub in list(subs.items()):
            if sub.buffer is not None:
                if len(sub.buffer) >= conn.queue.maxsize + 10_000:
                    WS_DROPPED_SLOW.inc()
                    conn.close(CLOSE_SLOW, "slow consumer: too many events while recovering")
                    continue
                sub.buffer.append((tp, offset, text))
                continue
            if sub.fence is not None:
                last = sub.fence.get(tp)
                if last is not None:
                    if offset <= last:
                        continue
                    del sub.fence[tp]
                    if not sub.fence:
                        sub.fence = None
            conn.offer(text)

    def learn_owner(self, *, job_id: str, user_id: str | None) -> None:
        if not user_id:
            return
        if job_id in self.owners:
            self.owners.move_to_end(job_id)
            return
        self.owners[job_id] = user_id
        if len(self.owners) > OWNER_CACHE_SIZE:
            self.owners.popitem(last=False)

    async def owner_of(self, job_id: str, *, token: str = "") -> str | None:
        owner = self.owners.get(job_id)
        if owner is None and self.owner_lookup is not None:
            owner = await self.owner_lookup(job_id, token)
            if owner:
                self.learn_owner(job_id=job_id, user_id=owner)
        return owner

    # -- connections ---------------------------------------------------------------------------
    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)
        conn.on_closed = self.detach
        WS_CONNECTIONS.inc()

    def detach(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        WS_CONNECTIONS.dec()
        for name in list(conn.subscriptions):
            self._remove(conn, name)

    def _remove(self, conn: Connection, name: str) -> None:
        sub = conn.subscriptions.pop(name, None)
        if sub is None:
            return
        self._topic_subscribers[sub.channel.topic] -= 1
        subs = self.subscribers.get(name)
        if subs is not None:
            subs.pop(conn, None)
            if not subs:
                del self.subscribers[name]

    async def authorize(self, principal: Principal, channel: Channel, *, token: str = "") -> None:
        """Raise ChannelError(forbidden) unless ``principal`` may subscribe to ``channel``."""
        if principal.operator or channel.kind == "system_alerts":
            return
        if channel.kind == "jobs_all":
            raise ChannelError("jobs:all is for operators", code="forbidden", channel=channel.name)
        if channel.kind == "user_notifications":
            if channel.subject != principal.user_id:
                raise ChannelError(f"{channel.name} belongs to another user", code="forbidden", channel=channel.name)
            return
        owner = await self.owner_of(channel.subject or "", token=token)
        if owner != principal.user_id:
            raise ChannelError(f"job {channel.subject} is not known to be yours (unknown jobs are refused; "
                               "subscribe again once it has been submitted)", code="forbidden", channel=channel.name)

    def validate_resume(self, channel: Channel, resume: Any) -> dict[TopicPartitionKey, int]:
        """The resume positions of a subscribe frame as {(topic, partition): offset}."""
        topic = self.settings.topic_prefix + channel.topic
        partitions = spec_by_name(channel.topic).partitions
        if not isinstance(resume, list) or not 0 < len(resume) <= partitions:
            raise ChannelError(f"resume must be a list of 1 to {partitions} positions",
                               code="bad_frame", channel=channel.name)
        positions: dict[TopicPartitionKey, int] = {}
        for item in resume:
            if not isinstance(item, dict):
                raise ChannelError("each resume position is {topic, partition, offset}", code="bad_frame",
                                   channel=channel.name)
            t, p, o = item.get("topic"), item.get("partition"), item.get("offset")
            if t != topic:
                raise ChannelError(f"resume topic {str(t)[:200]!r} is not the source of {channel.name} ({topic})",
                                   code="bad_frame", channel=channel.name)
            if not (type(p) is int and 0 <= p < partitions and type(o) is int and o >= -1):
                raise ChannelError(f"resume needs an integer partition in 0..{partitions - 1} and an integer "
                                   "offset >= -1", code="bad_frame", channel=channel.name)
            positions[(t, p)] = max(o, positions.get((t, p), -1))
        return positions

    async def subscribe(self, conn: Connection, name: str, resume: Any = None) -> None:
        """Subscribe ``conn`` to channel ``name`` (ChannelError when refused)."""
        channel = parse_channel(name)
        positions = self.validate_resume(channel, resume) if resume is not None else None
        if name not in conn.subscriptions and len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ChannelError(f"at most {MAX_SUBSCRIPTIONS} channels per connection", code="limit", channel=name)
        await self.authorize(conn.principal, channel, token=conn.token)
        if positions is not None and not self.positioned.is_set():
            try:  # the recovery must meet the live reader (no gap): wait until it reads Kafka
                await asyncio.wait_for(self.positioned.wait(), 10)
            except asyncio.TimeoutError:
                raise ChannelError("the feed is not reading Kafka yet; subscribe again shortly",
                                   code="unavailable", channel=name) from None
        if conn.closed:
            return
        self._remove(conn, name)  # a repeated subscribe replaces the previous one
        sub = Subscription(channel=channel, buffer=[] if positions is not None else None)
        conn.subscriptions[name] = sub
        self.subscribers.setdefault(name, {})[conn] = sub
        self._topic_subscribers[channel.topic] += 1
        conn.offer(dumps({"type": "subscribed", "channel": name}))
        if positions is not None:
            conn.spawn(self._recover(conn, sub, positions))

    def unsubscribe(self, conn: Connection, name: str) -> None:
        if name not in conn.subscriptions:
            raise ChannelError(f"not subscribed to {name[:300]}", code="bad_frame", channel=name[:300])
        self._remove(conn, name)
        conn.offer(dumps({"type": "unsubscribed", "channel": name}))

    # -- recovery ----------------------------------------------------------------------------
    async def _recover(self, conn: Connection, sub: Subscription, positions: dict[TopicPartitionKey, int]) -> None:
        channel = sub.channel
        count = 0
        fence: dict[TopicPartitionKey, int] = {}
        try:
            async with self._recovery_slots:
                reader = self.reader_factory()
                try:
                    begin, end = await reader.bounds(sorted(positions))
                    lost = [tp for tp in sorted(positions) if positions[tp] + 1 < begin[tp]]
                    if lost:
                        earliest = []
                        for tp in lost:
                            timestamp = None
                            async for record in reader.read(tp, begin[tp], min(begin[tp] + 1, end[tp])):
                                timestamp = record.timestamp
                            earliest.append({"topic": tp[0], "partition": tp[1], "offset": begin[tp],
                                             "timestamp": timestamp})
                        await conn.put(dumps({
                            "type": "not_recovered", "channel": channel.name, "earliest": earliest,
                            "reason": "the resume position is older than the topic's retention; events from "
                                      "`earliest` on follow"}))
                    for tp in sorted(positions):
                        start = max(positions[tp] + 1, begin[tp])
                        async for record in reader.read(tp, start, end[tp]):
                            event = self.decode(channel.topic, record)
                            if event is None or channel.name not in channels_of(channel.topic, event):
                                continue
                            await conn.put(event_frame(
                                channel=channel.name, topic=record.topic, partition=record.partition,
                                offset=record.offset, timestamp_ms=record.timestamp, event=event))
                            count += 1
                        fence[tp] = end[tp] - 1
                finally:
                    await reader.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the gap must be explicit, never silent
            logger.warning("websocket recovery of %s failed: %r", channel.name, exc)
            await conn.put(dumps({"type": "not_recovered", "channel": channel.name, "earliest": [],
                                  "reason": f"recovery from Kafka failed: {type(exc).__name__}: {exc}"[:500]}))
        # Hand over to live delivery; no await from here on, so no live frame slips in between.
        if conn.closed or conn.subscriptions.get(channel.name) is not sub:
            return
        conn.offer(dumps({"type": "recovered", "channel": channel.name, "count": count}))
        buffered, sub.buffer = sub.buffer or [], None
        sub.fence = fence or None
        for tp, offset, text in buffered:
            if offset > fence.get(tp, -1):
                conn.offer(text)


# -- frames from clients ---------------------------------------------------------------------
async def handle_frame(hub: WebsocketHub, conn: Connection, data: str) -> None:
    """Act on one text frame of an authenticated client; refusals become error frames."""
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        conn.offer(error_frame(code="bad_frame", message="frame is not JSON"))
        return
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        conn.offer(error_frame(code="bad_frame", message="a frame is a JSON object with a string \"type\""))
        return
    kind = frame["type"]
    if kind == "ping":
        conn.offer(dumps({"type": "pong", "id": frame.get("id")}))
        return
    if kind in ("subscribe", "unsubscribe"):
        channel = frame.get("channel")
        if not isinstance(channel, str) or not channel:
            conn.offer(error_frame(code="bad_frame", message=f"{kind} needs a string \"channel\""))
            return
        try:
            if kind == "subscribe":
                await hub.subscribe(conn, channel, frame.get("resume"))
            else:
                hub.unsubscribe(conn, channel)
        except ChannelError as exc:
            conn.offer(error_frame(code=exc.code, message=str(exc), channel=exc.channel))
        return
    if kind == "auth":
        conn.offer(error_frame(code="bad_frame", message="already authenticated"))
        return
    conn.offer(error_frame(code="bad_frame",
                           message=f"unknown frame type {kind[:100]!r} (subscribe, unsubscribe, ping)"))


class http_owner_lookup:  # noqa: N801 - used like a function
    """Ask ``GET {base_url}/api/jobs/{id}`` (routed by Faust to the worker owning the job), with
    the subscriber's own token, for the job's ``user_id``; None when unknown, not visible to
    the caller, or unanswered. ``close()`` ends its HTTP session."""

    def __init__(self, *, base_url: str, timeout: float = 10.0) -> None:
        self.base_url, self.timeout = base_url, timeout
        self._session: Any = None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def __call__(self, job_id: str, token: str) -> str | None:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        url = f"{self.base_url}/api/jobs/{quote(job_id, safe='')}"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with self._session.get(url, headers=headers) as response:
                    if response.status == 200:
                        body = await response.json()
                        user = body.get("user_id") if isinstance(body, dict) else None
                        return str(user) if user else None
                    if response.status != 503 or time.monotonic() > deadline:
                        return None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                logger.info("job owner lookup of %s failed: %r", job_id, exc)
                return None
            await asyncio.sleep(0.5)  # 503: recovering or rebalancing
