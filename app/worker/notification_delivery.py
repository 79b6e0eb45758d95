"""Notification delivery off the agents' path: the RabbitMQ queue ``notification-delivery``.

``deliver_notifications`` (``agents/notifications.py``) decides the channels of a
NotificationSent and publishes one :func:`delivery_message` per webhook or email channel
through the bridge (confirmed, windowed, before its batch is acked). Every worker runs a
:class:`NotificationDelivery` service consuming that queue with :mod:`app.worker.rabbit_consumer`:

* prefetch ``COSMIC_NOTIFICATION_DELIVERY_PREFETCH``, at most
  ``COSMIC_NOTIFICATION_DELIVERY_CONCURRENCY`` deliveries at once, so one dead endpoint holds
  only its own messages (each for at most ``COSMIC_WEBHOOK_TIMEOUT_SECONDS``);
* a transient failure (timeout, refused, 5xx, 429, SMTP 4xx) goes to the retry queues
  (1, 2, 4, 8, 16, 30 s) and, after ``COSMIC_RABBITMQ_MAX_ATTEMPTS`` attempts, to ``job-dlq``
  with ``x-error-reason: retries-exhausted``; a refusal for good (4xx, a forbidden address,
  SMTP 5xx) to ``job-dlq`` at once with its reason (``http-404``, ``forbidden-address`` …);
* each attempt's outcome — ``delivered`` (with the HTTP status), ``retrying`` (attempt n and
  the error), ``failed`` (the reason) — is produced to the Kafka topic
  ``notification-outcomes`` (key user_id, JSON), which ``record_notification_outcomes`` applies
  to ``notification_outcomes`` for ``GET /api/users/{id}/notifications``.

A message is acked only after its delivery and outcome (a retry or dead-letter copy is
confirmed first), so a worker killed mid-delivery leaves it to be redelivered: at least once,
receivers dedupe by ``Idempotency-Key``. While RabbitMQ is down the robust connection
reconnects and consumption resumes by itself.

Webhooks are signed (:mod:`app.core.webhook_signing`) and go through the worker's one
:class:`app.worker.delivery.WebhookClient`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aio_pika
import mode

from app.core.errors import DeliveryFailed, DeliveryRejected
from app.core.models import NotificationSent
from app.core.settings import Settings
from app.core.timeutil import now_ms, utc_now
from app.core.topic_specs import NOTIFICATION_OUTCOMES
from app.core.validation import event_to_json, parse_event
from app.core.webhook_signing import master_key, sign, user_secret
from app.worker import observability as metrics
from app.worker.delivery import WebhookClient, send_email, webhook_headers
from app.worker.rabbit_consumer import consume
from app.worker.rabbit_topology import NOTIFICATION_DELIVERY

logger = logging.getLogger(__name__)

OUTCOMES_TOPIC = NOTIFICATION_OUTCOMES
#: Seconds one SMTP conversation may take.
SMTP_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 30.0


def delivery_message(*, event: NotificationSent, channel: str, preferences: dict[str, Any]) -> aio_pika.Message:
    """The message asking a delivery worker to send ``event`` on ``channel`` (WEBHOOK or EMAIL).

    It names the target (webhook URL or email address) and the user's signing salt as they
    were when the notification was decided; ``message_id`` = ``<notification_id>:<channel>``."""
    target = preferences["webhook_url"] if channel == "WEBHOOK" else preferences["email"]
    body = {
        "notification_id": event.notification_id, "channel": channel, "user_id": event.user_id,
        "target": target, "signing_salt": preferences.get("signing_salt"),
        "queued_at": now_ms(), "event": event_to_json(event),
    }
    return aio_pika.Message(
        body=json.dumps(body, separators=(",", ":")).encode(), content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=f"{event.notification_id}:{channel}",
        correlation_id=event.correlation_id, type="NotificationDelivery", app_id="cosmic-horizons-events",
    )


def outcome_record(*, body: dict[str, Any], status: str, attempt: int, http_status: int | None = None,
                   error: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One value of ``notification-outcomes``."""
    return {"notification_id": body["notification_id"], "channel": body["channel"], "user_id": body["user_id"],
            "status": status, "attempts": attempt, "at": now_ms(), "http_status": http_status,
            "error": None if error is None else error[:500], "reason": reason}


class NotificationDelivery(mode.Service):
    """Consumes ``notification-delivery`` in this worker (see the module doc)."""

    current: "NotificationDelivery | None" = None

    def __init__(self, *args: Any, faust_app: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faust_app = faust_app
        self.settings = settings
        self.webhooks = WebhookClient(settings=settings)
        self._stop = asyncio.Event()
        self.consuming = asyncio.Event()
        self.outcomes: dict[str, int] = {}
        NotificationDelivery.current = self

    async def on_start(self) -> None:
        self.add_future(self._run())
        self.add_future(self._watch_depths())

    async def _watch_depths(self) -> None:
        """Queue depths into ``cosmic_notification_queue_depth`` every health interval."""
        while not self._stop.is_set():
            try:
                for name, depth in (await queue_depths(settings=self.settings)).items():
                    metrics.NOTIFICATION_QUEUE_DEPTH.labels(queue=name).set(depth)
            except Exception as exc:  # noqa: BLE001 - a metric, not a reason to stop
                logger.debug("queue depths unavailable: %s", exc)
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.health_interval_seconds)
            except asyncio.TimeoutError:
                pass

    async def on_stop(self) -> None:
        self._stop.set()
        await self.webhooks.close()
        if NotificationDelivery.current is self:
            NotificationDelivery.current = None

    async def _run(self) -> None:
        from app.worker.rabbit_bridge import wait_for_bridge

        bridge = await wait_for_bridge()
        await bridge.ready()  # the topology (and so the queue) is declared
        attempt = 0
        while not self._stop.is_set():
            try:
                await consume(queue=NOTIFICATION_DELIVERY, handler=self.deliver, settings=self.settings,
                              prefetch=self.settings.notification_delivery_prefetch, stop=self._stop,
                              on_dead_letter=self._dead_lettered,
                              concurrency=self.settings.notification_delivery_concurrency, started=self.consuming)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - RabbitMQ unreachable: try again
                attempt += 1
                self.consuming.clear()
                delay = min(2.0 ** attempt, MAX_BACKOFF_S)
                logger.warning("notification delivery: cannot consume %s (%s: %s); again in %.0f s",
                               NOTIFICATION_DELIVERY, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    # -- one message ---------------------------------------------------------------------------
    async def deliver(self, body: Any, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """Send one delivery; raise DeliveryFailed (retry) or DeliveryRejected (dead letter)."""
        attempt = int((message.headers or {}).get("x-retry-count", 0) or 0) + 1
        if not isinstance(body, dict) or body.get("channel") not in ("WEBHOOK", "EMAIL"):
            raise DeliveryRejected(f"not a delivery message: {str(body)[:200]}", channel="?", reason="malformed")
        channel = body["channel"]
        started = time.perf_counter()
        try:
            http_status = await self._send(body)
        except DeliveryFailed as exc:
            self._count(channel, "retrying", exc.reason)
            await self._report(outcome_record(body=body, status="retrying", attempt=attempt, http_status=exc.status,
                                              error=str(exc), reason=exc.reason))
            raise
        except DeliveryRejected:
            raise  # reported by _dead_lettered, with the attempt count
        metrics.NOTIFICATION_DELIVERY_SECONDS.labels(channel=channel).observe(time.perf_counter() - started)
        queued_at = body.get("queued_at")
        if isinstance(queued_at, int):
            metrics.NOTIFICATION_END_TO_END_SECONDS.labels(channel=channel).observe(
                max(time.time() - queued_at / 1000.0, 0.0))
        self._count(channel, "delivered", "ok")
        await self._report(outcome_record(body=body, status="delivered", attempt=attempt, http_status=http_status))

    async def _send(self, body: dict[str, Any]) -> int | None:
        if body["channel"] == "EMAIL":
            try:
                event = parse_event(data=body["event"], now=utc_now())
            except Exception as exc:  # noqa: BLE001 - a message we cannot read cannot be sent
                raise DeliveryRejected(f"delivery message with an unreadable event: {exc}", channel="EMAIL",
                                       reason="malformed") from exc
            if not isinstance(event, NotificationSent):
                raise DeliveryRejected(f"a {event.event_type} is not delivered", channel="EMAIL", reason="malformed")
            if not self.settings.smtp_url:
                raise DeliveryRejected("email is off (COSMIC_SMTP_URL is empty)", channel="EMAIL", reason="email-off")
            await send_email(smtp_url=self.settings.smtp_url, sender=self.settings.smtp_from,
                             recipient=body["target"], event=event, timeout_s=SMTP_TIMEOUT_S)
            return None
        payload = json.dumps(body["event"], separators=(",", ":")).encode()
        signature = None
        if body.get("signing_salt"):
            secret = user_secret(key=master_key(self.settings), user_id=body["user_id"], salt=body["signing_salt"])
            signature = sign(secret=secret, body=payload)
        headers = webhook_headers(notification_id=body["notification_id"], signature=signature)
        return await self.webhooks.post(url=body["target"], body=payload, headers=headers)

    async def _dead_lettered(self, body: Any, message: aio_pika.abc.AbstractIncomingMessage, reason: str,
                             error: BaseException) -> None:
        if not isinstance(body, dict) or not {"notification_id", "channel", "user_id"} <= set(body):
            return
        attempt = int((message.headers or {}).get("x-retry-count", 0) or 0) + 1
        detail = getattr(error, "reason", None)
        why = reason if reason != "retries-exhausted" or not detail else f"retries-exhausted ({detail})"
        self._count(body["channel"], "failed", str(detail or reason))
        await self._report(outcome_record(body=body, status="failed", attempt=attempt,
                                          http_status=getattr(error, "status", None), error=str(error), reason=why))

    def _count(self, channel: str, outcome: str, reason: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        metrics.NOTIFICATION_DELIVERIES.labels(channel=channel, outcome=outcome, reason=reason).inc()

    async def _report(self, record: dict[str, Any]) -> None:
        """Produce one outcome (awaited: the message is acked only after it)."""
        topic = self.settings.topic_prefix + OUTCOMES_TOPIC
        value = json.dumps(record, separators=(",", ":")).encode()
        try:
            await self.faust_app.producer.send_and_wait(topic, record["user_id"].encode(), value, None, None, None)
        except Exception as exc:  # noqa: BLE001 - the delivery happened; only its status is late
            logger.warning("notification %s: outcome %s not recorded (%s: %s)", record["notification_id"],
                           record["status"], type(exc).__name__, exc)


async def queue_depths(*, settings: Settings) -> dict[str, int]:
    """Messages ready in the delivery queue and each of its retry queues (management API)."""
    from app.worker.rabbit_topology import management_get, retry_queue_name

    names = [NOTIFICATION_DELIVERY] + [retry_queue_name(NOTIFICATION_DELIVERY, d) for d in settings.retry_delays]
    depths = {}
    for name in names:
        found = await asyncio.to_thread(management_get, settings.rabbitmq_url, f"/{name}")
        if isinstance(found, dict):
            depths[name] = int(found.get("messages", 0) or 0)
    return depths
