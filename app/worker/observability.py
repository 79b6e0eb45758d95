"""Prometheus metric families of the service (prometheus-client), served at ``GET /metrics``.

Every module that measures something imports its family from here, so the names and labels
are defined once. Importing this module only declares the families in :data:`REGISTRY`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: The service's own registry (not the process-global default one), so tests can create
#: apps freely and ``/metrics`` shows only what this service defines.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_CONSUMED = Counter(
    "cosmic_events_consumed", "Events consumed by the worker's agents, per topic.",
    ["topic"], registry=REGISTRY)
EVENTS_PRODUCED = Counter(
    "cosmic_events_produced", "Events produced (acknowledged by Kafka), per topic.",
    ["topic"], registry=REGISTRY)
PROCESSING_SECONDS = Histogram(
    "cosmic_processing_seconds", "Time an agent spent on one event, per agent.",
    ["agent"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BATCH_EVENTS = Histogram(
    "cosmic_batch_events", "Events per batch an agent handled, per agent.",
    ["agent"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=REGISTRY)
DUPLICATES_DROPPED = Counter(
    "cosmic_duplicates_dropped_total", "Events dropped as exact duplicates (already applied), per topic.",
    ["topic"], registry=REGISTRY)
PUBLISH_SECONDS = Histogram(
    "cosmic_publish_seconds", "Time from send to Kafka acknowledgement, per topic.",
    ["topic"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
IDEMPOTENCY_HITS = Counter(
    "cosmic_idempotency_hits", "Events skipped because their event_id was already applied, per agent.",
    ["agent"], registry=REGISTRY)
DLQ_EVENTS = Counter(
    "cosmic_dlq_events", "Events sent to a dead-letter topic, per source topic and reason code.",
    ["topic", "reason"], registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "cosmic_consumer_lag", "Messages between the worker's committed offset and the end of the partition.",
    ["topic", "partition"], registry=REGISTRY)
SECONDS_SINCE_COMMIT = Gauge(
    "cosmic_seconds_since_commit", "Seconds since this worker last committed offsets.",
    registry=REGISTRY)
RABBITMQ_CONFIRMS = Counter(
    "cosmic_rabbitmq_confirms", "Messages RabbitMQ confirmed to the bridge, per exchange.",
    ["exchange"], registry=REGISTRY)
RABBITMQ_NACKS = Counter(
    "cosmic_rabbitmq_nacks", "Publishes RabbitMQ refused or that failed (retried), per exchange.",
    ["exchange"], registry=REGISTRY)
RABBITMQ_UNROUTABLE = Counter(
    "cosmic_rabbitmq_unroutable", "Messages RabbitMQ returned because no queue is bound for them, per exchange.",
    ["exchange"], registry=REGISTRY)
RABBITMQ_CONNECTED = Gauge(
    "cosmic_rabbitmq_connected", "1 while the bridge is connected to RabbitMQ, else 0.",
    registry=REGISTRY)
WS_CONNECTIONS = Gauge(
    "cosmic_websocket_connections", "Open websocket connections on this worker.",
    registry=REGISTRY)
WS_DROPPED_SLOW = Counter(
    "cosmic_websocket_dropped_slow_clients", "Websocket clients closed because their send queue was full.",
    registry=REGISTRY)

NOTIFICATION_DELIVERY_SECONDS = Histogram(
    "cosmic_notification_delivery_seconds",
    "Seconds one successful notification delivery took (the webhook POST or SMTP conversation), per channel.",
    ["channel"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
NOTIFICATION_END_TO_END_SECONDS = Histogram(
    "cosmic_notification_queued_to_delivered_seconds",
    "Seconds from a delivery being queued on RabbitMQ to it succeeding (retries included), per channel.",
    ["channel"], buckets=_LATENCY_BUCKETS + (30.0, 60.0, 120.0), registry=REGISTRY)
NOTIFICATION_DELIVERIES = Counter(
    "cosmic_notification_deliveries",
    "Delivery attempts by channel, outcome (delivered / retrying / failed) and reason.",
    ["channel", "outcome", "reason"], registry=REGISTRY)
NOTIFICATION_QUEUE_DEPTH = Gauge(
    "cosmic_notification_queue_depth",
    "Messages in the notification-delivery queue and its retry queues (RabbitMQ management API).",
    ["queue"], registry=REGISTRY)


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per label values (``labels()`` takes a lock
    and builds a tuple on every call: a few µs per event on the hot path)."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


#: Content type of :func:`render` (Prometheus text exposition format 0.0.4, UTF-8).
CONTENT_TYPE = "text/plain; version=0.0.4"


def render() -> bytes:
    """The current value of every family, in Prometheus' text format."""
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY)
