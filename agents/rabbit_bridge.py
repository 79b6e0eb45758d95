"""``bridge_to_rabbitmq`` (and its notifications / job-metrics siblings): ephemeral copies of
Kafka events on RabbitMQ, published through :class:`app.worker.rabbit_bridge.RabbitBridge`.

Each agent has concurrency 1 and takes events in batches (:mod:`app.worker.batching`): a batch's
messages are published when it finishes, in order, one write per ``COSMIC_RABBITMQ_CONFIRM_WINDOW``
messages (the publisher confirms outstanding at most), and the batch ends only when RabbitMQ
confirmed every one of them, so Faust acks
(and later commits) an event only after RabbitMQ holds it. While
RabbitMQ is down the publish retries forever: consumption of these agents pauses, nothing is
dead-lettered for it, and a redelivery after a crash re-publishes with the same message_id.
An event type without a route is dead-lettered to ``<topic>.dlq`` (``not-bridged``).
Off with ``COSMIC_RABBITMQ_BRIDGE_ENABLED=false``. The three agents are one function,
:func:`declare_bridge`, declared once per topic at import.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import RejectedEvent
from app.core.topic_specs import JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS
from app.worker.batching import active_batch
from app.worker.main import app, settings
from app.worker.streams import Origin, process_events
from app.worker.topics import job_lifecycle_topic, job_metrics_topic, notifications_topic


async def publish_event(event: dict[str, Any], origin: Origin) -> None:
    """Publish one event (its JSON form: the bridge agents decode with ``as_json``, since the
    message body is that form) within the batch's confirm window."""
    from app.worker.rabbit_bridge import wait_for_bridge
    from app.worker.rabbit_topology import route_for

    try:
        route_for(event)
    except KeyError:
        raise RejectedEvent(f"no RabbitMQ route for {event['event_type']}", reason="not-bridged") from None
    bridge = await wait_for_bridge()
    batch = active_batch()
    if batch is None:
        await bridge.publish(event)
        return
    # The batch's events go out together when it finishes, in order, confirmed before it is
    # acked (one write per window of confirms: RabbitBridge.publish_events).
    pending = batch.memo.get("rabbitmq-events")
    if pending is None:
        pending = batch.memo["rabbitmq-events"] = []
        batch.defer(lambda: bridge.publish_events(pending, window=settings.rabbitmq_confirm_window))
    pending.append(event)


def declare_bridge(*, topic: Any, topic_name: str, name: str, owner: str) -> Any:
    """Declare the bridge agent ``name`` on the Faust topic ``topic`` (``topic_name`` unprefixed):
    concurrency 1, each event through :func:`publish_event`. Undecodable records are left to
    ``owner``, the agent that owns the topic's dead letters."""

    async def bridge(stream):  # noqa: ANN001, ANN202
        async for result in process_events(stream, topic=topic_name, handler=publish_event,
                                           dead_letter_undecodable=False, as_json=True):
            yield result

    bridge.__name__ = bridge.__qualname__ = name
    bridge.__doc__ = f"Publish {topic_name} events to RabbitMQ ({owner} owns the topic's dead letters)."
    return app.agent(topic, concurrency=1, name=name)(bridge)


if settings.rabbitmq_bridge_enabled:
    from app.worker import rabbit_bridge as _rabbit_bridge  # noqa: F401 - registers the service

    bridge_to_rabbitmq = declare_bridge(topic=job_lifecycle_topic, topic_name=JOB_LIFECYCLE,
                                        name="bridge_to_rabbitmq", owner="track_job_lifecycle")
    bridge_notifications_to_rabbitmq = declare_bridge(topic=notifications_topic, topic_name=NOTIFICATIONS,
                                                      name="bridge_notifications_to_rabbitmq",
                                                      owner="deliver_notifications")
    bridge_metrics_to_rabbitmq = declare_bridge(topic=job_metrics_topic, topic_name=JOB_METRICS,
                                                name="bridge_metrics_to_rabbitmq", owner="track_job_metrics")
