"""RabbitMQ topology (seed 001) as data, and its idempotent declaration and verification.

Exchanges (all durable): ``job.events``, ``notifications``, ``metrics`` (topic) and ``dlx``
(direct). The queue ``notification-delivery`` has no binding: deliveries are published to it
through the default exchange. Work queues dead-letter to ``dlx`` with routing key ``job-dlq`` (the one binding of
``job-dlq`` on ``dlx``), so expired, overflowing and consumer-rejected messages all land in
``job-dlq``; RabbitMQ's ``x-death`` header (and our ``x-original-*`` headers) keep where they
came from.

Retry queues (see :mod:`app.worker.rabbit_consumer`): per work queue and delay,
``<queue>.retry.<n>s`` with ``x-message-ttl`` = n s and ``x-dead-letter-exchange`` = ``""``
(the default exchange) + ``x-dead-letter-routing-key`` = ``<queue>``. An expired retry
message therefore goes back to *that queue only* — re-publishing to the work exchange with
the original routing key would also hand a copy to every other queue bound to that key.

Queue type comes from ``COSMIC_RABBITMQ_QUEUE_TYPE``: ``classic`` (one local node) or
``quorum`` (a cluster), where work queues also get ``x-overflow: reject-publish`` and
``x-dead-letter-strategy: at-least-once`` (quorum-only; needs reject-publish).

Declaring is idempotent. A queue that already exists with other arguments makes RabbitMQ
answer PRECONDITION_FAILED; :func:`declare_topology` then raises :class:`TopologyMismatch`
naming every such queue and argument (read from the management API when available, else
from the broker's message). Nothing is ever deleted or changed.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from app.core.errors import CosmicError

logger = logging.getLogger(__name__)

JOB_EVENTS = "job.events"
NOTIFICATIONS = "notifications"
METRICS = "metrics"
DLX = "dlx"
DLQ = "job-dlq"
DLQ_ROUTING_KEY = "job-dlq"
#: Webhook and email deliveries of notifications, one message per notification and channel,
#: published to the default exchange (routing key = this name) and consumed by every worker
#: (:mod:`app.worker.notification_delivery`); no TTL and no length limit: none may be dropped.
NOTIFICATION_DELIVERY = "notification-delivery"
#: The work queues of the ``job.events`` exchange and the notifications' broadcast queue.
JOB_EVENTS_API = "job-events-api"
JOB_EVENTS_AUDIT = "job-events-audit"
WEBSOCKET_BROADCAST = "websocket-broadcast"


class TopologyMismatch(CosmicError):
    """A queue or exchange exists with arguments other than the ones we declare."""

    def __init__(self, differences: dict[str, dict[str, tuple[Any, Any]] | str]) -> None:
        self.differences = differences
        parts = []
        for name, diff in differences.items():
            if isinstance(diff, str):
                parts.append(f"{name!r}: {diff}")
            else:
                args = ", ".join(f"{k} (existing {old!r}, wanted {new!r})" for k, (old, new) in sorted(diff.items()))
                parts.append(f"queue {name!r} differs in {args}")
        super().__init__(
            "RabbitMQ topology mismatch — nothing was deleted or changed; fix or delete by hand: "
            + "; ".join(parts)
        )


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str  # topic | direct


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing key)
    message_ttl_ms: int | None
    max_length: int | None
    dead_letter: bool = True  # work queue: dead-letters to dlx
    retry: bool = True  # has retry queues

    def arguments(self, *, queue_type: str) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": queue_type}
        if self.message_ttl_ms is not None:
            args["x-message-ttl"] = self.message_ttl_ms
        if self.max_length is not None:
            args["x-max-length"] = self.max_length
        if self.dead_letter:
            args["x-dead-letter-exchange"] = DLX
            args["x-dead-letter-routing-key"] = DLQ_ROUTING_KEY
            if queue_type == "quorum":
                args["x-overflow"] = "reject-publish"
                args["x-dead-letter-strategy"] = "at-least-once"
        return args


EXCHANGES = (
    ExchangeSpec(JOB_EVENTS, "topic"),
    ExchangeSpec(NOTIFICATIONS, "topic"),
    ExchangeSpec(METRICS, "topic"),
    ExchangeSpec(DLX, "direct"),
)

QUEUES = (
    QueueSpec(JOB_EVENTS_API, ((JOB_EVENTS, "job.#"),), 30_000, 100_000),
    QueueSpec(JOB_EVENTS_AUDIT, ((JOB_EVENTS, "job.#"),), 300_000, 100_000),
    QueueSpec(WEBSOCKET_BROADCAST, ((NOTIFICATIONS, "notifications.*"),), 30_000, 50_000),
    QueueSpec(NOTIFICATION_DELIVERY, (), None, None),
    QueueSpec(DLQ, ((DLX, DLQ_ROUTING_KEY),), 86_400_000, None, dead_letter=False, retry=False),
)

QUEUE_TYPES = ("classic", "quorum")


def queue_spec(name: str) -> QueueSpec:
    for spec in QUEUES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def retry_queue_name(queue: str, delay: int) -> str:
    return f"{queue}.retry.{delay}s"


def retry_queue_arguments(queue: str, delay: int, *, queue_type: str) -> dict[str, Any]:
    return {
        "x-queue-type": queue_type,
        "x-message-ttl": delay * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }


def all_queue_arguments(*, queue_type: str, retry_delays: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Queue name → the arguments we declare it with (work, DLQ and one retry queue per delay)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in QUEUES:
        out[spec.name] = spec.arguments(queue_type=queue_type)
        if spec.retry:
            for delay in retry_delays:
                out[retry_queue_name(spec.name, delay)] = retry_queue_arguments(spec.name, delay, queue_type=queue_type)
    return out


# -- routing ------------------------------------------------------------------------------
class _Fields:
    """Attribute access to an event's JSON form (only the fields routing reads)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return self._data.get(name)


def route_for(event: Any) -> tuple[str, str]:
    """(exchange, routing key) of an event, a record or its JSON form; KeyError for a type
    that is not bridged."""
    if isinstance(event, dict):
        event = _Fields(event)
    kind = event.event_type
    if kind == "JobSubmitted":
        return JOB_EVENTS, "job.submitted"
    if kind in ("JobQueued", "JobStatusChanged", "JobCancelled"):
        return JOB_EVENTS, f"job.{event.job_id}.status"
    if kind == "JobCompleted":
        return JOB_EVENTS, "job.completed"
    if kind == "JobFailed":
        return JOB_EVENTS, "job.failed"
    if kind in ("NotificationSent", "NotificationRead"):
        return NOTIFICATIONS, f"notifications.{event.user_id}"
    if kind == "JobMetricsSample":
        return METRICS, f"metrics.{event.job_id}"
    raise KeyError(kind)


# -- declaring ----------------------------------------------------------------------------
def _normalise(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def management_get(url: str, path: str) -> Any | None:
    """GET ``/api/queues/<vhost><path>`` of the management API (AMQP port + 10000), with the
    AMQP URL's credentials; None when it cannot be reached or answers no JSON."""
    import base64

    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    host, port = parts.hostname or "127.0.0.1", (parts.port or 5672) + 10000
    request = urllib.request.Request(f"http://{host}:{port}/api/queues/{quote(vhost, safe='')}{path}")
    token = base64.b64encode(f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}".encode())
    request.add_header("Authorization", "Basic " + token.decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def management_queue_arguments(url: str, queue: str) -> dict[str, Any] | None:
    """The live arguments of ``queue`` from the management API, or None."""
    found = management_get(url, f"/{quote(queue, safe='')}")
    return None if found is None else dict(found.get("arguments") or {})


def diff_arguments(existing: dict[str, Any], wanted: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    diff = {}
    for key in sorted(set(existing) | set(wanted)):
        old, new = existing.get(key), wanted.get(key)
        if key == "x-queue-type" and old is None:
            old = "classic"  # the server's default when the argument is absent
        if _normalise(old) != _normalise(new):
            diff[key] = (old, new)
    return diff


async def declare_topology(connection: Any, *, url: str, queue_type: str, retry_delays: tuple[int, ...]) -> None:
    """Declare every exchange, queue and binding (idempotent). Raise TopologyMismatch when a
    queue or exchange exists with other arguments; nothing is deleted or changed."""
    import aiormq

    if queue_type not in QUEUE_TYPES:
        raise TopologyMismatch({"settings": f"COSMIC_RABBITMQ_QUEUE_TYPE must be one of {QUEUE_TYPES}"})
    differences: dict[str, Any] = {}
    channel = await connection.channel(publisher_confirms=False)
    try:
        exchanges = {}
        for spec in EXCHANGES:
            try:
                exchanges[spec.name] = await channel.declare_exchange(spec.name, spec.type, durable=True)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                differences[f"exchange {spec.name}"] = str(exc)
                channel = await connection.channel(publisher_confirms=False)
        wanted = all_queue_arguments(queue_type=queue_type, retry_delays=retry_delays)
        for name, arguments in wanted.items():
            try:
                queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                live = management_queue_arguments(url, name)
                diff = diff_arguments(live, arguments) if live is not None else None
                differences[name] = diff or f"queue {name!r}: {exc}"
                channel = await connection.channel(publisher_confirms=False)
                continue
            base = name.split(".retry.")[0]
            if name == base and name in {s.name for s in QUEUES}:
                for exchange, key in queue_spec(name).bindings:
                    if exchange in exchanges:
                        await queue.bind(exchanges[exchange], routing_key=key)
    finally:
        if not channel.is_closed:
            await channel.close()
    if differences:
        raise TopologyMismatch(differences)
