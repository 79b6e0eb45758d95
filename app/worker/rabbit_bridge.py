"""The RabbitMQ bridge: ephemeral copies of Kafka events on RabbitMQ, through a Faust service
owning one aio-pika RobustConnection and a publisher-confirm channel.

* Who copies: the agent that owns a topic (``track_job_lifecycle``, ``deliver_notifications``,
  ``track_job_metrics``) copies each decodable record of its batch (:func:`copy_event`, from
  :func:`app.worker.streams.process_events` with ``copy_to_rabbitmq``), so each topic is read
  by one agent. The copies go out when the batch ends, in order, one write per
  ``COSMIC_RABBITMQ_CONFIRM_WINDOW`` messages, and the batch is acked only once RabbitMQ
  confirmed every one: Faust commits an event's offset only after RabbitMQ holds its copy.
  While RabbitMQ is down those agents therefore wait (nothing is dead-lettered for it and
  nothing is lost: Kafka keeps the events); a redelivery after a crash publishes again with
  the same message_id. An event type without a route is dead-lettered to ``<topic>.dlq``
  (``not-bridged``). Off with ``COSMIC_RABBITMQ_BRIDGE_ENABLED=false`` (notification
  deliveries still go through RabbitMQ).

* Start-up: the first connect happens in ``on_start``. Reachable → the topology is declared
  (:mod:`app.worker.rabbit_topology`); a queue with other arguments stops the worker with
  :class:`~app.worker.rabbit_topology.TopologyMismatch`. Unreachable → an error naming the URL
  *without its password* is logged and a background task keeps retrying with backoff
  (1 s doubling to 30 s); the worker starts and serves HTTP meanwhile (``connected`` is
  False, for health).
* Publishing: :meth:`RabbitBridge.publish` returns only once RabbitMQ confirmed the message
  (``Exchange.publish`` on a confirm channel waits for the basic.ack). While RabbitMQ is
  down it waits and retries (the robust connection reconnects by itself) — it never gives
  up, so the calling agent stops consuming and Kafka offsets do not advance: nothing is
  lost, and a message whose confirm was lost in the outage is published again with the
  same ``message_id`` (duplicates possible, losses not).
* Unroutable messages: messages are published *mandatory*, so RabbitMQ returns one that no
  queue is bound for. On an exchange our topology binds no queue to (``metrics``: samples
  are for whoever subscribes) that is not a failure — the copy had no reader — so it is
  counted (``cosmic_rabbitmq_unroutable_total`` per exchange, :attr:`RabbitBridge.unroutable`)
  and logged (the first, then every 1,000th per exchange), and the event counts as bridged.
  On ``job.events`` and ``notifications`` a return means one of our queues is missing: it is
  retried like a refusal, so nothing bound for those queues is dropped.

Importing this module does no network I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Optional

import aio_pika
import aiormq
import mode

from app.core.models import EventBase
from app.core.timeutil import parse_timestamp
from app.core.validation import event_to_json
from app.worker import observability as metrics
from app.worker.batching import active_batch
from app.worker.faust_internals import amqp
from app.worker.main import app, settings
from app.worker.rabbit_topology import JOB_EVENTS, METRICS, NOTIFICATIONS, QUEUES, TopologyMismatch, declare_topology, route_for

logger = logging.getLogger(__name__)

#: Exchanges the topology binds queues to (and the default exchange, which routes to a queue by
#: its name): a message returned from one of them is retried.
BOUND_EXCHANGES = frozenset(exchange for spec in QUEUES for exchange, _ in spec.bindings) | {""}
#: The exchanges the bridge publishes to ("" = the default exchange: notification deliveries).
PUBLISHED_EXCHANGES = (JOB_EVENTS, NOTIFICATIONS, METRICS, "")

MAX_BACKOFF = 30.0


def _backoff(attempt: int) -> float:
    return min(1.0 * 2 ** max(attempt - 1, 0), MAX_BACKOFF)


APP_ID = "cosmic-horizons-events"


def event_frame(event: EventBase | dict[str, Any]) -> tuple[bytes, aiormq.spec.Basic.Properties]:
    """The AMQP body and properties of an event (a record, or its JSON form as the owning agents
    copy it): JSON body and the event's identity as properties. What the bridge publishes;
    built directly for aiormq (an ``aio_pika.Message`` and its properties cost 35 µs more per
    event here, 2026-12-07)."""
    data = event if isinstance(event, dict) else event_to_json(event)
    return json.dumps(data, separators=(",", ":")).encode(), aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
        message_id=data["event_id"],
        correlation_id=data["correlation_id"],
        message_type=data["event_type"],
        timestamp=parse_timestamp(data["timestamp"]),
        app_id=APP_ID,
        headers={},  # as aio-pika sends them: the same bytes on the wire as before
        priority=0,
    )


def event_message(event: EventBase | dict[str, Any]) -> aio_pika.Message:
    """:func:`event_frame` as an ``aio_pika.Message`` (for aio-pika's own publish)."""
    body, properties = event_frame(event)
    return aio_pika.Message(
        body=body, content_type=properties.content_type, delivery_mode=properties.delivery_mode,
        message_id=properties.message_id, correlation_id=properties.correlation_id,
        type=properties.message_type, timestamp=properties.timestamp, app_id=properties.app_id,
    )


class RabbitBridge(mode.Service):
    """One RobustConnection + confirm channel, reconnecting forever."""

    #: The running instance (agents publish through it).
    current: Optional["RabbitBridge"] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = settings.rabbitmq_url
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._ready = asyncio.Event()
        self.published = 0
        self._recover_lock = asyncio.Lock()
        self._healthy_since_failure = True
        self.publish_retries = 0
        #: Messages returned unroutable (no queue bound), per exchange.
        self.unroutable: dict[str, int] = {}
        RabbitBridge.current = self
        metrics.RABBITMQ_CONNECTED.set_function(lambda: 1.0 if self.connected else 0.0)
        for exchange in PUBLISHED_EXCHANGES:  # samples at 0 from the start
            metrics.RABBITMQ_CONFIRMS.labels(exchange=exchange)
            metrics.RABBITMQ_NACKS.labels(exchange=exchange)

    @property
    def connected(self) -> bool:
        """True while the connection is up (a robust connection that lost the broker stays
        not-closed but clears ``connected``) and the confirm channel is open."""
        conn, chan = self._connection, self._channel
        return bool(conn is not None and not conn.is_closed and conn.connected.is_set()
                    and chan is not None and not chan.is_closed)

    async def _connect_once(self) -> None:
        connection = await aio_pika.connect_robust(self.url, timeout=10, client_properties={
            "connection_name": f"cosmic-bridge {settings.app_id}"})
        try:
            await declare_topology(connection, url=self.url, queue_type=settings.rabbitmq_queue_type,
                                   retry_delays=settings.retry_delays)
            channel = await connection.channel(publisher_confirms=True)
            exchanges = await _exchanges_of(channel)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel, self._exchanges = connection, channel, exchanges
        self._ready.set()
        logger.info("RabbitMQ bridge connected to %s (topology declared, queue type %s)",
                    settings.rabbitmq_url_redacted, settings.rabbitmq_queue_type)

    async def on_start(self) -> None:
        # connect in the background: services start one after another, so awaiting RabbitMQ
        # here would hold back every service registered after the bridge (the websocket hub,
        # the delivery workers); publishers wait on ``ready()`` instead.
        self.add_future(self._keep_connecting())

    async def _keep_connecting(self) -> None:
        attempt = 0
        while not self.should_stop:
            if attempt:
                await asyncio.sleep(_backoff(attempt))
            attempt += 1
            try:
                await self._connect_once()
                return
            except TopologyMismatch as exc:
                logger.error("RabbitMQ topology mismatch at %s; stopping: %s", settings.rabbitmq_url_redacted, exc)
                await self.crash(exc)
                return
            except Exception as exc:  # noqa: BLE001 - unreachable, refused, auth: keep retrying
                if attempt == 1:
                    logger.error("RabbitMQ at %s is unreachable (%s: %s); retrying in the background",
                                 settings.rabbitmq_url_redacted, type(exc).__name__, _safe(exc))
                else:
                    logger.error("RabbitMQ at %s is still unreachable (attempt %d: %s: %s)",
                                 settings.rabbitmq_url_redacted, attempt, type(exc).__name__, _safe(exc))

    async def on_stop(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.close()
            except Exception:  # noqa: BLE001
                pass
        RabbitBridge.current = None if RabbitBridge.current is self else RabbitBridge.current

    async def ready(self) -> None:
        """Return once connected with the topology declared."""
        await self._ready.wait()

    async def publish(self, event: EventBase | dict[str, Any]) -> None:
        """Publish ``event`` (a record or its JSON form) to its exchange and routing key; return
        once RabbitMQ confirmed it.
        Retries with backoff for as long as RabbitMQ is unavailable."""
        exchange_name, routing_key = route_for(event)
        body, properties = event_frame(event)
        await self.publish_message(exchange_name=exchange_name, routing_key=routing_key, body=body,
                                   properties=properties)

    async def publish_events(self, events: list[EventBase | dict[str, Any]], *, window: int) -> None:
        """Publish ``events`` in order, at most ``window`` confirms outstanding; return once
        RabbitMQ confirmed every one. Each chunk of ``window`` goes out in one write
        (:func:`app.worker.faust_internals.amqp.publish_batch`); a message that is not confirmed there
        (a nack, a return on a bound exchange, no answer in 15 s, the channel gone) is published
        again alone by :meth:`publish_message`, which retries until RabbitMQ confirms it."""
        window = max(1, window)
        for start in range(0, len(events), window):
            chunk = [(*route_for(event), *event_frame(event)) for event in events[start:start + window]]
            confirmations = await self._publish_chunk(chunk)
            for (exchange_name, routing_key, body, properties), confirmation in zip(chunk, confirmations):
                try:
                    self._settle(exchange_name=exchange_name, routing_key=routing_key, confirmation=confirmation)
                except RuntimeError:
                    await self.publish_message(exchange_name=exchange_name, routing_key=routing_key, body=body,
                                               properties=properties)

    async def _publish_chunk(self, chunk: list[tuple[str, str, bytes, Any]]) -> list[Any]:
        """Publish ``chunk`` in one write; per message what RabbitMQ answered (see
        :meth:`_settle`), or None when it did not (an error, no answer in 15 s)."""
        if not self._ready.is_set() or not self.connected:
            return [None] * len(chunk)
        try:
            channel = await self._channel.get_underlay_channel()  # type: ignore[union-attr]
            futures = await _bounded(amqp.publish_batch(
                channel, [(self._exchanges[exchange_name].name, routing_key, body, properties)
                          for exchange_name, routing_key, body, properties in chunk]), 15)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - channel closed, connection lost: one at a time
            logger.info("RabbitMQ batch publish failed (%s: %s); publishing one at a time",
                        type(exc).__name__, _safe(exc))
            return [None] * len(chunk)
        _, pending = await asyncio.wait(futures, timeout=15)
        for future in pending:
            future.cancel()  # a late confirm is then ignored by aiormq; the message goes again
        return [None if future.cancelled() or future.exception() is not None else future.result()
                for future in futures]

    def _settle(self, *, exchange_name: str, routing_key: str, confirmation: Any) -> None:
        """Count what RabbitMQ answered to one publish: an ack, or a return from an exchange no
        queue of ours is bound to (unroutable); anything else raises RuntimeError (publish again)."""
        if isinstance(confirmation, aiormq.abc.DeliveredMessage):  # returned: no queue bound
            if exchange_name in BOUND_EXCHANGES:
                raise RuntimeError(f"RabbitMQ returned the message: no queue bound on {exchange_name!r} "
                                   f"for {routing_key} (was a queue of the topology deleted?)")
            self._count_unroutable(exchange_name=exchange_name, routing_key=routing_key)
            return
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise RuntimeError(f"RabbitMQ did not ack the message: {confirmation!r}")
        self.published += 1
        metrics.labelled(metrics.RABBITMQ_CONFIRMS, exchange_name).inc()

    async def publish_message(self, *, exchange_name: str, routing_key: str, body: bytes,
                              properties: aiormq.spec.Basic.Properties) -> None:
        """Publish ``body`` with ``properties`` (``exchange_name`` "" is the default exchange:
        straight to the queue named ``routing_key``); return once RabbitMQ confirmed it,
        retrying meanwhile."""
        attempt = 0
        while True:
            attempt += 1
            try:
                if not self._ready.is_set():
                    await self._ready.wait()
                exchange = self._exchanges[exchange_name]
                confirmation = await _bounded(_publish(exchange, body, properties, routing_key=routing_key), 15)
                self._settle(exchange_name=exchange_name, routing_key=routing_key, confirmation=confirmation)
                if attempt > 1:
                    logger.info("publish of %s confirmed after %d attempts", properties.message_id, attempt)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - RabbitMQ down, channel closed, nack
                self.publish_retries += 1
                metrics.RABBITMQ_NACKS.labels(exchange=exchange_name).inc()
                self._healthy_since_failure = False
                delay = _backoff(attempt)
                if attempt <= 3 or attempt % 10 == 0:
                    logger.warning("publish of %s to %r/%s failed (%s: %s); retrying in %.0f s",
                                   properties.message_id, exchange_name, routing_key, type(exc).__name__,
                                   _safe(exc), delay)
                await asyncio.sleep(delay)
                await self._recover()

    def _count_unroutable(self, *, exchange_name: str, routing_key: str) -> None:
        count = self.unroutable[exchange_name] = self.unroutable.get(exchange_name, 0) + 1
        metrics.RABBITMQ_UNROUTABLE.labels(exchange=exchange_name).inc()
        if count == 1 or count % 1000 == 0:
            logger.warning("RabbitMQ returned %d message(s) published to %s (e.g. routing key %s): no queue "
                           "is bound for them", count, exchange_name, routing_key)

    async def _recover(self) -> None:
        """After a failed publish: publish on a *fresh* confirm channel — on the robust
        connection when it is back, else on a new robust connection. (A robust channel
        restored after a broker restart was seen to stay unusable, and awaiting it could
        hang, so every step here is bounded.)"""
        async with self._recover_lock:
            if self._channel is not None and not self._channel.is_closed and self._healthy_since_failure:
                return
            conn = self._connection
            try:
                if conn is not None and not conn.is_closed and conn.connected.is_set():
                    channel = await _bounded(conn.channel(publisher_confirms=True), 10)
                else:
                    conn = await _bounded(aio_pika.connect_robust(self.url, timeout=10), 15)
                    old, self._connection = self._connection, conn
                    if old is not None:
                        asyncio.ensure_future(_bounded(old.close(), 5)).add_done_callback(lambda f: f.exception())
                    channel = await _bounded(conn.channel(publisher_confirms=True), 10)
            except Exception as exc:  # noqa: BLE001 - next attempt tries again
                logger.info("RabbitMQ at %s not usable yet (%s: %s)", settings.rabbitmq_url_redacted,
                            type(exc).__name__, _safe(exc))
                return
            old_channel = self._channel
            self._exchanges = await _exchanges_of(channel)
            self._channel = channel
            self._healthy_since_failure = True
            logger.info("RabbitMQ bridge: confirm channel reopened on %s", settings.rabbitmq_url_redacted)
            if old_channel is not None:
                asyncio.ensure_future(_bounded(old_channel.close(), 2)).add_done_callback(lambda f: f.exception())


async def _exchanges_of(channel: aio_pika.abc.AbstractChannel) -> dict[str, aio_pika.abc.AbstractExchange]:
    """The exchanges published to, by name, on ``channel`` (no round trip)."""
    exchanges = {name: await channel.get_exchange(name, ensure=False) for name in PUBLISHED_EXCHANGES if name}
    exchanges[""] = channel.default_exchange
    return exchanges


async def _publish(exchange: aio_pika.abc.AbstractExchange, body: bytes, properties: aiormq.spec.Basic.Properties,
                   *, routing_key: str) -> Any:
    """``exchange.publish(message)`` on its confirm channel, without waiting for the frames to
    be written to the socket before the next publish may start: aio-pika's publish holds the
    channel's lock until the writer task drained the frames, so the publishes of one batch
    went out one event-loop turn apart — with the worker's other agents busy in between,
    about 10 ms each. Here a batch's publishes are queued at once and their confirms are
    awaited together (aiormq's ``basic_publish(wait=False)``; the confirm is awaited either way)."""
    if exchange.channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{exchange.channel!r} closed")
    channel = await exchange.channel.get_underlay_channel()
    return await channel.basic_publish(
        body, exchange=exchange.name, routing_key=routing_key, properties=properties,
        mandatory=True, timeout=10, wait=False,
    )


async def _bounded(awaitable: Any, timeout: float) -> Any:
    """Await with a deadline that cannot hang: on timeout the task is cancelled but not awaited
    (``asyncio.wait_for`` waits for the cancellation, which aiormq internals may not honour)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise asyncio.TimeoutError(f"no answer from RabbitMQ in {timeout:.0f} s")
    return task.result()


def _safe(exc: BaseException) -> str:
    """An exception's text with the RabbitMQ password removed."""
    from urllib.parse import urlsplit

    text = str(exc)
    password = urlsplit(settings.rabbitmq_url).password
    return text.replace(password, "***") if password else text


# Always: notification deliveries go through RabbitMQ even when the copies of the event topics
# (COSMIC_RABBITMQ_BRIDGE_ENABLED) are off.
app.service(RabbitBridge)


async def wait_for_bridge() -> RabbitBridge:
    """The running bridge service (agents start before user services)."""
    while RabbitBridge.current is None:
        await asyncio.sleep(0.1)
    return RabbitBridge.current


#: The batch memo key of a batch's RabbitMQ copies.
_COPIES = "rabbitmq-copies"


async def copy_event(event: dict[str, Any]) -> None:
    """The RabbitMQ copy of one consumed event (its JSON form), made by the agent that owns the
    event's topic (:func:`app.worker.streams.process_events` with ``copy_to_rabbitmq``).

    Inside a batch the copies wait for the batch's end and go out together, in order, at most
    ``COSMIC_RABBITMQ_CONFIRM_WINDOW`` confirms outstanding (:meth:`RabbitBridge.publish_events`);
    the batch — and so the Kafka offsets of its events — is acked only once RabbitMQ confirmed
    every copy. Outside a batch this returns once RabbitMQ confirmed it."""
    bridge = await wait_for_bridge()
    batch = active_batch()
    if batch is None:
        await bridge.publish(event)
        return
    pending = batch.memo.get(_COPIES)
    if pending is None:
        pending = batch.memo[_COPIES] = []
        batch.defer(lambda: bridge.publish_events(pending, window=settings.rabbitmq_confirm_window))
    pending.append(event)
