"""A consumer of the bridge's RabbitMQ queues with the retry protocol.

``await consume(queue="job-events-audit", handler=h, settings=s)`` calls
``await h(body, message)`` for each message (``body`` = the decoded JSON) and then:

* success → ack;
* :class:`~app.core.errors.RetriableError` with attempts left → a copy goes to the retry queue
  ``<queue>.retry.<n>s`` (n = 1, 2, 4, 8, 16, 30, 30 … by retry number) with
  ``x-retry-count`` incremented, then the original is acked; the retry queue's TTL expires
  it back into ``<queue>`` only (default exchange, see :mod:`app.worker.rabbit_topology`);
* any other error (reason: the error's ``reason`` attribute, else ``error``), retries exhausted (``COSMIC_RABBITMQ_MAX_ATTEMPTS`` handler calls), or a
  body that is not JSON → a copy goes to ``dlx`` → ``job-dlq`` with ``x-error-class``,
  ``x-error-message``, ``x-error-reason``, ``x-retry-count``, ``x-original-routing-key``,
  ``x-original-exchange`` and ``x-original-queue``, then the original is acked.

Copies are published on a confirm channel and the original is acked only after the confirm,
so a crash in between duplicates a message but never loses it. Nothing is requeued forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

import aio_pika

from app.core.errors import RetriableError
from app.core.settings import Settings
from app.worker.rabbit_topology import DLQ_ROUTING_KEY, DLX, retry_queue_name

logger = logging.getLogger(__name__)

Handler = Callable[[Any, aio_pika.abc.AbstractIncomingMessage], Awaitable[Any]]
#: Told about a message before it goes to ``job-dlq``: (body or None, message, reason, error).
DeadLetterHook = Callable[[Any, aio_pika.abc.AbstractIncomingMessage, str, BaseException], Awaitable[Any]]


def retry_delay(retry_number: int, *, delays: tuple[int, ...]) -> int:
    """Seconds before retry ``retry_number`` (1-based): the schedule's delays, the last one repeating."""
    return delays[min(retry_number, len(delays)) - 1]


def _copy(message: aio_pika.abc.AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )


def _str(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RetryingConsumer:
    """The protocol for one queue; :func:`consume` drives it."""

    def __init__(self, *, queue: str, handler: Handler, settings: Settings,
                 publish_channel: aio_pika.abc.AbstractChannel, on_dead_letter: DeadLetterHook | None = None,
                 concurrency: int | None = None) -> None:
        self.queue = queue
        self.handler = handler
        self.on_dead_letter = on_dead_letter
        #: Handler calls at once (aio-pika runs one task per delivered message, up to the prefetch).
        self._gate = asyncio.Semaphore(concurrency) if concurrency else None
        self.max_attempts = settings.rabbitmq_max_attempts
        self.retry_delays = settings.retry_delays
        self.channel = publish_channel
        self.outcomes: dict[str, int] = {"ok": 0, "retried": 0, "dead-lettered": 0}

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if self._gate is None:
            await self._on_message(message)
            return
        async with self._gate:
            await self._on_message(message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        retries = int(headers.get("x-retry-count", 0) or 0)
        headers.setdefault("x-original-routing-key", message.routing_key or "")
        headers.setdefault("x-original-exchange", message.exchange or "")
        try:
            body = json.loads(message.body)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._dead_letter(message, headers, retries, reason="undecodable", error=exc, body=None)
            return
        try:
            await self.handler(body, message)
        except RetriableError as exc:
            if retries + 1 < self.max_attempts:
                await self._retry(message, headers, retries + 1, exc)
            else:
                await self._dead_letter(message, headers, retries, reason="retries-exhausted", error=exc, body=body)
            return
        except Exception as exc:  # noqa: BLE001 - never requeue a poison message forever
            reason = getattr(exc, "reason", None)
            await self._dead_letter(message, headers, retries, reason=reason if isinstance(reason, str) else "error",
                                    error=exc, body=body)
            return
        await message.ack()
        self.outcomes["ok"] += 1

    async def _retry(self, message: Any, headers: dict[str, Any], retry_number: int, exc: BaseException) -> None:
        target = retry_queue_name(self.queue, retry_delay(retry_number, delays=self.retry_delays))
        headers.update({"x-retry-count": retry_number, "x-last-error-class": type(exc).__name__,
                        "x-last-error-message": str(exc)[:1024]})
        await self.channel.default_exchange.publish(_copy(message, headers), routing_key=target)
        await message.ack()
        self.outcomes["retried"] += 1
        logger.info("%s: message %s failed (%s), retry %d via %s", self.queue, message.message_id,
                    type(exc).__name__, retry_number, target)

    async def _dead_letter(self, message: Any, headers: dict[str, Any], retries: int, *, reason: str,
                           error: BaseException, body: Any) -> None:
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(body, message, reason, error)
            except Exception:  # noqa: BLE001 - the dead letter itself must still happen
                logger.exception("%s: the dead-letter hook failed for %s", self.queue, message.message_id)
        headers.update({
            "x-error-reason": reason,
            "x-error-class": type(error).__name__,
            "x-error-message": str(error)[:4096],
            "x-retry-count": retries,
            "x-original-queue": self.queue,
        })
        dlx = await self.channel.get_exchange(DLX, ensure=False)
        await dlx.publish(_copy(message, headers), routing_key=DLQ_ROUTING_KEY)
        await message.ack()
        self.outcomes["dead-lettered"] += 1
        logger.warning("%s: message %s dead-lettered to job-dlq (%s: %s: %s)", self.queue,
                       message.message_id, reason, type(error).__name__, error)


async def consume(*, queue: str, handler: Handler, settings: Settings,
                  connection: aio_pika.abc.AbstractRobustConnection | None = None,
                  prefetch: int = 10, stop: asyncio.Event | None = None,
                  on_dead_letter: DeadLetterHook | None = None, concurrency: int | None = None,
                  started: asyncio.Event | None = None) -> RetryingConsumer:
    """Consume ``queue`` with the retry protocol until ``stop`` is set (or the task is
    cancelled). Uses ``connection`` or opens (and closes) its own robust connection."""
    own = connection is None
    if connection is None:
        connection = await aio_pika.connect_robust(settings.rabbitmq_url)
    try:
        publish_channel = await connection.channel(publisher_confirms=True)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        consumer = RetryingConsumer(queue=queue, handler=handler, settings=settings,
                                    publish_channel=publish_channel, on_dead_letter=on_dead_letter,
                                    concurrency=concurrency)
        q = await consume_channel.get_queue(queue, ensure=True)
        tag = await q.consume(consumer.on_message)
        if started is not None:
            started.set()
        try:
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            try:
                await q.cancel(tag)
            except Exception:  # noqa: BLE001 - connection already gone
                pass
        return consumer
    finally:
        if own:
            await connection.close()
