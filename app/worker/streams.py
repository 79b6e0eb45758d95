"""What every agent shares: raw consumption, decoding, emitting events, and dead letters.

Agents consume *raw bytes* and decode inside :func:`process_events`, so bytes that are not
our Avro (or name an unknown schema id) become dead letters instead of crashing the agent.
Per event, a handler either succeeds, raises :class:`RejectedEvent` (dead-lettered with
its reason), raises :class:`RetriableError` (retried with backoff, then dead-lettered), or
raises anything else (dead-lettered as ``error``). The agent always keeps consuming.

Dead letters go to ``<topic>.dlq`` with the original key and value bytes untouched (so a
re-drive is lossless) and headers naming the reason, error class, message, stack trace,
the original topic/partition/offset/timestamp, and the attempt count.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiokafka.errors import KafkaError
from faust.agents.agent import current_agent

from app.core.errors import DuplicateEvent, EventDecodeError, RejectedEvent, RetriableError
from app.core.models import EventBase
from app.core.timeutil import format_epoch_ms, now_ms
from app.core.topic_specs import DLQ_SUFFIX, JOB_LIFECYCLE, JOB_METRICS, unprefixed
from app.worker import observability as metrics
from app.worker.batching import Batch, active_batch
from app.worker.faust_internals import set_current_event, take_batches
from app.worker.logging_setup import event_context_of
from app.worker.main import app, codecs, settings
from app.worker.publisher import prepare_record

logger = logging.getLogger(__name__)

#: Dead letters and duplicates by (source topic, reason), for health and /metrics.
DLQ_COUNTS: Counter[tuple[str, str]] = Counter()
#: Exact duplicates dropped (not dead-lettered), by source topic.
DUPLICATES_DROPPED: Counter[str] = Counter()
#: Events held because Kafka was unavailable, by source topic.
KAFKA_WAITS: Counter[str] = Counter()

DLQ_HEADERS = (
    "dlq.reason", "dlq.error_class", "dlq.error_message", "dlq.stack_trace", "dlq.topic",
    "dlq.partition", "dlq.offset", "dlq.timestamp", "dlq.attempts", "dlq.dead_lettered_at",
)


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Where an event came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def raw_topic(name: str, *, partitions: int):  # noqa: ANN201 - faust TopicT
    """A Faust topic of raw bytes (keys and values); decoding happens in the agent."""
    return app.topic(
        settings.topic_prefix + name, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw", partitions=partitions,
    )


async def emit(*events: EventBase) -> None:
    """Produce ``events`` through the worker's producer, exactly like every ingest path.

    Inside an agent's batch (:mod:`app.worker.batching`) the records are handed to the producer and
    their acknowledgements are awaited once, when the batch finishes (before Faust acks it);
    elsewhere this returns once Kafka acknowledged all of them (sent together, awaited together)."""
    batch = active_batch()
    started = time.perf_counter()
    if batch is not None:
        for event in events:
            record = prepare_record(event=event, codecs=codecs, topic_prefix=settings.topic_prefix)
            await batch.send(topic=record.topic, key=record.key, value=record.value, partition=None,
                             timestamp=record.timestamp_ms / 1000.0, headers=list(record.headers),
                             on_acked=_produced(_unprefixed(record.topic), started))
        return
    futures = []
    topics = []
    for event in events:
        record = prepare_record(event=event, codecs=codecs, topic_prefix=settings.topic_prefix)
        topics.append(_unprefixed(record.topic))
        futures.append(
            await app.producer.send(
                record.topic, record.key, record.value, None, record.timestamp_ms / 1000.0, list(record.headers)
            )
        )
    for topic, future in zip(topics, futures):
        await future
        _produced(topic, started)()


def _produced(topic: str, started: float) -> Callable[[], None]:
    def count() -> None:
        metrics.labelled(metrics.EVENTS_PRODUCED, topic).inc()
        metrics.labelled(metrics.PUBLISH_SECONDS, topic).observe(time.perf_counter() - started)

    return count


async def dead_letter(*, origin: Origin, reason: str, error: BaseException | None, attempts: int) -> None:
    """Send the original record to ``<topic>.dlq`` with why and where it came from.

    If Kafka is unavailable this keeps trying (with backoff): the event must not be lost,
    and its source offset does not advance meanwhile."""
    headers = list(origin.headers) + [
        ("dlq.reason", reason.encode()),
        ("dlq.error_class", type(error).__name__.encode() if error else b""),
        ("dlq.error_message", str(error).encode()[:4096] if error else b""),
        ("dlq.stack_trace", "".join(traceback.format_exception(error)).encode()[-8192:] if error else b""),
        ("dlq.topic", origin.topic.encode()),
        ("dlq.partition", str(origin.partition).encode()),
        ("dlq.offset", str(origin.offset).encode()),
        ("dlq.timestamp", str(origin.timestamp_ms or "").encode()),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.dead_lettered_at", str(now_ms()).encode()),
    ]
    attempt = 0
    while True:
        attempt += 1
        try:
            await app.producer.send_and_wait(
                origin.topic + DLQ_SUFFIX, origin.key, origin.value, origin.partition, None, headers
            )
            break
        except KafkaError as exc:
            logger.warning("dead-letter topic unavailable (attempt %d): %r; retrying", attempt, exc)
            await asyncio.sleep(backoff_delay(attempt))
    DLQ_COUNTS[(_unprefixed(origin.topic), reason)] += 1
    metrics.DLQ_EVENTS.labels(topic=_unprefixed(origin.topic), reason=reason).inc()
    metrics.EVENTS_PRODUCED.labels(topic=_unprefixed(origin.topic) + DLQ_SUFFIX).inc()
    logger.warning(
        "dead-lettered %s[%s]@%s: %s%s", origin.topic, origin.partition, origin.offset, reason,
        f" ({type(error).__name__}: {error})" if error else "",
    )


def _unprefixed(topic: str) -> str:
    return unprefixed(topic=topic, prefix=settings.topic_prefix)


def backoff_delay(attempt: int) -> float:
    """0.5, 1, 2, 4, 8, 8 … seconds before attempt ``attempt + 1``."""
    return min(0.5 * 2 ** (attempt - 1), 8.0)


Handler = Callable[[EventBase, Origin], Awaitable[Any]]


#: Undecodable records skipped by secondary consumers (their topic's owner dead-letters them).
UNDECODABLE_SKIPPED: Counter[str] = Counter()


async def handle_one(
    *, topic: str, origin: Origin, handler: Handler, dead_letter_undecodable: bool = True, as_json: bool = False,
    copy_to_rabbitmq: bool = False,
) -> bool:
    """Decode and handle one record; dead-letter on failure. True if the handler succeeded.

    The handler gets the event record, or with ``as_json`` its JSON form
    (``ConfluentAvroCodec.decode_json``: what ``event_to_json`` gives of the record, at half the
    cost of building it) — for agents that need only that (the audit chain).

    With ``copy_to_rabbitmq`` every decodable record is also copied to RabbitMQ, whatever the
    handler decides (:func:`app.worker.rabbit_bridge.copy_event`): the topic's one agent makes
    the copies, so the topic is read once.

    Only one agent per topic — its owner — dead-letters undecodable records; other agents
    reading the same topic pass ``dead_letter_undecodable=False`` and skip them, so a bad
    record is dead-lettered once. Log lines written meanwhile carry the event's correlation_id
    and job_id (:mod:`app.worker.logging_setup`); consumption and handling time go to /metrics."""
    agent = current_agent()
    agent_name = agent.name.rsplit(".", 1)[-1] if agent is not None else topic
    metrics.labelled(metrics.EVENTS_CONSUMED, topic).inc()
    started = time.perf_counter()
    try:
        as_json_form: dict[str, Any] | None = None
        try:
            codec = codecs.for_topic(topic)
            if as_json:
                event = as_json_form = codec.decode_json(origin.value or b"")
            elif copy_to_rabbitmq:  # the record for the handler, the JSON form for the copy: one read
                event, as_json_form = codec.decode_both(origin.value or b"")
            else:
                event = codec.decode(origin.value or b"")
        except EventDecodeError as exc:
            if dead_letter_undecodable:
                await dead_letter(origin=origin, reason=f"undecodable:{exc.reason}", error=exc, attempts=1)
            else:
                UNDECODABLE_SKIPPED[topic] += 1
            return False
        if copy_to_rabbitmq:
            await _copy_to_rabbitmq(origin=origin, data=as_json_form)  # type: ignore[arg-type]
        with event_context_of(event):
            return await handle_decoded(topic=topic, origin=origin, handler=handler, event=event)
    finally:
        metrics.labelled(metrics.PROCESSING_SECONDS, agent_name).observe(time.perf_counter() - started)


async def _copy_to_rabbitmq(*, origin: Origin, data: dict[str, Any]) -> None:
    """Publish the RabbitMQ copy of a decoded record (``data``, its JSON form: the message body),
    within the batch (:func:`app.worker.rabbit_bridge.copy_event`); an event type with no route is
    dead-lettered as ``not-bridged``."""
    from app.worker.rabbit_bridge import copy_event
    from app.worker.rabbit_topology import route_for

    try:
        route_for(data)
    except KeyError as exc:
        error = RejectedEvent(f"no RabbitMQ copy of this record: {exc!r}", reason="not-bridged")
        await dead_letter(origin=origin, reason="not-bridged", error=error, attempts=1)
        return
    await copy_event(data)


async def handle_decoded(*, topic: str, origin: Origin, handler: Handler, event: EventBase) -> bool:
    """Run ``handler`` on a decoded event with the per-event policy (see the module docstring);
    True if it succeeded or the event was a duplicate.

    A handler that does two independent things for one event runs the second through this
    too, so the second's failure is settled (dead-lettered, retried) on its own and cannot
    change or repeat what the first did (``agents/job_lifecycle.py``).

    A failed attempt's table writes and emitted records are not undone (they are in the
    batch, :mod:`app.worker.batching`): a handler that is retried, or fails after writing, relies
    on its offset fences, as on a replay after a restart."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await handler(event, origin)
            return True
        except DuplicateEvent as exc:
            # Already applied (a producer retry, a replay after a crash): dropped and counted,
            # never dead-lettered — the dead-letter topics are for events that need a person.
            DUPLICATES_DROPPED[topic] += 1
            metrics.labelled(metrics.DUPLICATES_DROPPED, topic).inc()
            logger.debug("duplicate dropped: %s", exc)
            return True
        except RejectedEvent as exc:
            await dead_letter(origin=origin, reason=exc.reason, error=exc, attempts=attempt)
            return False
        except KafkaError as exc:
            # The broker itself is unavailable (emitting effects failed): hold this event and
            # retry until it is back. Dead-lettering would need the same broker, and the
            # source offset does not advance meanwhile, so nothing is lost.
            KAFKA_WAITS[topic] += 1
            logger.warning("Kafka unavailable while handling %s@%s (attempt %d): %r; retrying",
                           origin.topic, origin.offset, attempt, exc)
            await asyncio.sleep(backoff_delay(attempt))
        except RetriableError as exc:
            if attempt >= settings.max_attempts:
                await dead_letter(origin=origin, reason="retries-exhausted", error=exc, attempts=attempt)
                return False
            logger.info("retriable error on %s@%s (attempt %d): %s", origin.topic, origin.offset, attempt, exc)
            await asyncio.sleep(backoff_delay(attempt))
        except Exception as exc:  # noqa: BLE001 - one bad event must never stop the agent
            logger.exception("handler failed on %s[%s]@%s", origin.topic, origin.partition, origin.offset)
            await dead_letter(origin=origin, reason="error", error=exc, attempts=attempt)
            return False


#: Records read back from Kafka because Faust committed past them (see :func:`_repair_gap`).
GAP_RECORDS: Counter[str] = Counter()


def _origin(message: Any) -> Origin:
    return Origin(
        topic=message.topic, partition=message.partition, offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        key=message.key, value=message.value, headers=tuple(message.headers or ()),
    )


def _cursor_table(topic: str):  # noqa: ANN202 - faust TableT or None
    from tables.agent_cursors import cursors

    return cursors.get(topic)


def _cursor_offset(cursor, agent: str) -> int | None:  # noqa: ANN001
    """The last offset ``agent`` handled in the current event's partition, if known."""
    current = cursor.get(agent)
    return current.get("offset") if isinstance(current, dict) else None


def _cursor_mark(cursor, agent: str) -> int | None:  # noqa: ANN001
    """The newest record timestamp (ms) ``agent`` has seen in the current event's partition."""
    current = cursor.get(agent) if cursor is not None else None
    return current.get("max_ts") if isinstance(current, dict) else None


#: The platform's ingest topics, whose records are checked for lateness as they are consumed
#: (the topics the service's own agents write to are not: a lagging worker's audit records
#: are legitimately older than another's).
LATENESS_CHECKED = frozenset({JOB_LIFECYCLE, JOB_METRICS})
#: Late records skipped by secondary consumers (their topic's owner dead-letters them).
LATE_SKIPPED: Counter[str] = Counter()


def late_by(*, timestamp_ms: int | None, mark: int | None) -> int | None:
    """How many ms a record stamped ``timestamp_ms`` lies beyond the lateness bound of its
    partition, whose newest record so far is stamped ``mark`` (None: within it). The bound is
    COSMIC_MAX_EVENT_LATENESS + COSMIC_MAX_CLOCK_SKEW: publishers with clocks up to the skew
    apart each stamp events at most the lateness in the past (``app.core.validation``)."""
    if timestamp_ms is None or mark is None:
        return None
    slack = int((settings.max_event_lateness + settings.max_clock_skew) * 1000)
    behind = mark - timestamp_ms
    return behind - slack if behind > slack else None


async def _refuse_late(*, topic: str, origin: Origin, mark: int, excess_ms: int, owner: bool) -> None:
    """Dead-letter (the topic's owner) or skip (other readers) a record stamped too long before
    the newest one of its partition: a replay window could not be exact with it."""
    if not owner:
        LATE_SKIPPED[topic] += 1
        return
    behind = (mark - (origin.timestamp_ms or 0)) / 1000
    error = RejectedEvent(
        f"record stamped {behind:.0f} s before the newest record of its partition ({format_epoch_ms(mark)}); "
        f"at most COSMIC_MAX_EVENT_LATENESS + COSMIC_MAX_CLOCK_SKEW = "
        f"{settings.max_event_lateness + settings.max_clock_skew:g} s are allowed", reason="late-event")
    await dead_letter(origin=origin, reason="late-event", error=error, attempts=1)


_FROM_CURSOR: Any = object()


async def _repair_gap(*, cursor, agent: str, topic: str, origin: Origin, handler: Handler,  # noqa: ANN001
                      dead_letter_undecodable: bool, as_json: bool, copy_to_rabbitmq: bool = False,
                      last: int | None = _FROM_CURSOR) -> None:
    """Handle the records between this agent's last offset on ``origin``'s partition (``last``,
    read from the cursor unless given) and ``origin`` if Faust skipped them (read back from
    Kafka; see ``tables/agent_cursors.py``)."""
    from app.worker.offset_gaps import GapReadError, read_range

    if last is _FROM_CURSOR:
        last = _cursor_offset(cursor, agent)
    if last is None or origin.offset <= last + 1:
        return
    attempt = 0
    while True:
        attempt += 1
        try:
            records = await read_range(bootstrap=settings.kafka_bootstrap, topic=origin.topic,
                                       partition=origin.partition, first=last + 1, last=origin.offset - 1)
            break
        except GapReadError as exc:
            if attempt >= settings.max_attempts:
                logger.error("%s: offsets %s[%s] %d..%d were skipped and could not be read back (%s); "
                             "going on without them", agent, origin.topic, origin.partition, last + 1,
                             origin.offset - 1, exc)
                metrics.DLQ_EVENTS.labels(topic=topic, reason="gap-unread").inc()
                return
            await asyncio.sleep(backoff_delay(attempt))
    if records:
        logger.warning("%s: offsets %s[%s] %d..%d never reached the agent (committed past by the consumer); "
                       "handling %d record(s) read back from Kafka", agent, origin.topic, origin.partition,
                       last + 1, origin.offset - 1, len(records))
    for record in records:
        GAP_RECORDS[topic] += 1
        gap_origin = Origin(
            topic=origin.topic, partition=origin.partition, offset=record.offset,
            timestamp_ms=record.timestamp, key=record.key, value=record.value,
            headers=tuple(record.headers or ()),
        )
        await handle_one(topic=topic, origin=gap_origin, handler=handler,
                         dead_letter_undecodable=dead_letter_undecodable, as_json=as_json,
                         copy_to_rabbitmq=copy_to_rabbitmq)
        cursor[agent] = {"offset": record.offset}


async def process_events(  # noqa: ANN201
    stream, *, topic: str, handler: Handler, dead_letter_undecodable: bool = True,  # noqa: ANN001
    as_json: bool = False, copy_to_rabbitmq: bool = False, max_wait_ms: float | None = None,
):
    """Drive ``handler`` over a raw stream of ``topic`` (unprefixed name), in batches of at most
    ``COSMIC_BATCH_MAX_EVENTS`` events, each handed over at most ``max_wait_ms`` (default
    ``COSMIC_BATCH_MAX_WAIT_MS``) after its first event arrived; yields
    one list of (offset, ok) per batch, once the batch's effects are acknowledged. The handler
    gets each event as a record, or with ``as_json`` in its JSON form (:func:`handle_one`);
    with ``copy_to_rabbitmq`` each decodable record is also copied to RabbitMQ, confirmed
    before the batch is acked.

    Per batch (:mod:`app.worker.batching`): each event is handled in offset order as Faust's current
    event (its own failures dead-lettered, the agent goes on), table writes are coalesced per
    key, Kafka sends and deferred confirmations are awaited once at the end, and only then
    does Faust ack the batch. Each agent keeps the last offset it handled per partition
    (``tables/agent_cursors.py``): records Faust skipped are read back and handled first, so
    none is lost."""
    cursor = _cursor_table(topic)
    check_lateness = topic in LATENESS_CHECKED
    #: partition -> newest record timestamp seen (ms), for a topic without a cursor table.
    marks: dict[int, int] = {}
    agent = current_agent()
    agent_name = agent.name.rsplit(".", 1)[-1] if agent is not None else topic
    batches = metrics.BATCH_EVENTS.labels(agent=agent_name)
    wait_ms = settings.batch_max_wait_ms if max_wait_ms is None else max_wait_ms
    async for events in take_batches(stream, max_events=settings.batch_max_events, within=wait_ms / 1000.0):
        batch = Batch(producer=app.producer, window=settings.rabbitmq_confirm_window, backoff=backoff_delay,
                      direct_changelog=app.producer.started)
        results: list[tuple[int, bool]] = []
        #: partition -> [last offset handled (None: unknown), the batch's last event of it,
        #: newest record timestamp (ms) seen]: the cursor is read once per partition and
        #: written once per partition, at the end.
        handled: dict[int, list[Any]] = {}
        with batch.active():
            for event in events:
                set_current_event(event)
                origin = _origin(event.message)
                seen = None
                if cursor is not None:
                    seen = handled.get(origin.partition)
                    if seen is None:
                        seen = handled[origin.partition] = [_cursor_offset(cursor, agent_name), event,
                                                            _cursor_mark(cursor, agent_name)]
                    if seen[0] is not None and origin.offset > seen[0] + 1:
                        await _repair_gap(cursor=cursor, agent=agent_name, topic=topic, origin=origin,
                                          handler=handler, dead_letter_undecodable=dead_letter_undecodable,
                                          as_json=as_json, copy_to_rabbitmq=copy_to_rabbitmq, last=seen[0])
                replayed = seen is not None and seen[0] is not None and origin.offset <= seen[0]
                mark = (seen[2] if seen is not None else marks.get(origin.partition)) if check_lateness else None
                excess = late_by(timestamp_ms=origin.timestamp_ms, mark=mark) if check_lateness else None
                if excess is not None:
                    # A record at or before the cursor is a replay after a restart: the mark already
                    # holds records after it, so it is skipped, not dead-lettered a second time.
                    if not replayed:
                        await _refuse_late(topic=topic, origin=origin, mark=mark, excess_ms=excess,  # type: ignore[arg-type]
                                           owner=dead_letter_undecodable)
                    ok = False
                else:
                    if check_lateness and origin.timestamp_ms is not None and (mark is None or origin.timestamp_ms > mark):
                        if seen is not None:
                            seen[2] = origin.timestamp_ms
                        else:
                            marks[origin.partition] = origin.timestamp_ms
                    ok = await handle_one(topic=topic, origin=origin, handler=handler,
                                          dead_letter_undecodable=dead_letter_undecodable, as_json=as_json,
                                          copy_to_rabbitmq=copy_to_rabbitmq)
                if cursor is not None and (seen[0] is None or seen[0] < origin.offset):
                    seen[0], seen[1] = origin.offset, event
                results.append((origin.offset, ok))
            for offset, event, newest in handled.values():
                set_current_event(event)
                if offset is not None and (_cursor_offset(cursor, agent_name) or -1) < offset:
                    cursor[agent_name] = {"offset": offset} if newest is None else {"offset": offset, "max_ts": newest}
            await batch.finish()
        batches.observe(len(events))
        yield results
