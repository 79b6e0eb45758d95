"""RabbitMQ topology data, routing, retry delays and dead-letter routes (no broker)."""

from __future__ import annotations

import random
import uuid
from types import SimpleNamespace

import pytest

from app.core.errors import ConfigError
from app.core.models import NotificationSent
from app.core.settings import Settings
from app.core.topic_specs import JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS
from app.ops.cli_rabbit import original_route
from app.ops.demo import metrics_samples
from app.ops.workload import build_workload
from app.worker.main import codecs
from app.worker.rabbit_bridge import event_frame, event_message
from app.worker.rabbit_consumer import retry_delay
from app.worker.rabbit_topology import (
    QUEUES, TopologyMismatch, all_queue_arguments, diff_arguments, queue_spec, route_for,
)


@pytest.mark.parametrize("kind,exchange,key", [
    ("JobSubmitted", "job.events", "job.submitted"),
    ("JobQueued", "job.events", "job.j-1.status"),
    ("JobStatusChanged", "job.events", "job.j-1.status"),
    ("JobCancelled", "job.events", "job.j-1.status"),
    ("JobCompleted", "job.events", "job.completed"),
    ("JobFailed", "job.events", "job.failed"),
    ("NotificationSent", "notifications", "notifications.u-9"),
    ("NotificationRead", "notifications", "notifications.u-9"),
    ("JobMetricsSample", "metrics", "metrics.j-1"),
])
def test_routes(kind, exchange, key):  # noqa: ANN001
    assert route_for(SimpleNamespace(event_type=kind, job_id="j-1", user_id="u-9")) == (exchange, key)


def test_unbridged_type_has_no_route():
    with pytest.raises(KeyError):
        route_for(SimpleNamespace(event_type="AuditRecord"))


def test_seed_arguments_classic_and_quorum():
    classic = all_queue_arguments(queue_type="classic", retry_delays=(1, 2, 4, 8, 16, 30))
    assert classic["job-events-api"] == {
        "x-queue-type": "classic", "x-message-ttl": 30_000, "x-max-length": 100_000,
        "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "job-dlq"}
    assert classic["job-events-audit"]["x-message-ttl"] == 300_000
    assert classic["websocket-broadcast"]["x-max-length"] == 50_000
    assert classic["job-dlq"] == {"x-queue-type": "classic", "x-message-ttl": 86_400_000}
    assert classic["job-events-api.retry.30s"] == {
        "x-queue-type": "classic", "x-message-ttl": 30_000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "job-events-api"}
    assert "job-dlq.retry.1s" not in classic
    quorum = all_queue_arguments(queue_type="quorum", retry_delays=(1, 2, 4, 8, 16, 30))
    assert quorum["job-events-audit"]["x-overflow"] == "reject-publish"
    assert quorum["job-events-audit"]["x-dead-letter-strategy"] == "at-least-once"
    assert "x-overflow" not in classic["job-events-audit"]
    assert queue_spec("websocket-broadcast").bindings == (("notifications", "notifications.*"),)
    assert {q.name for q in QUEUES} == {"job-events-api", "job-events-audit", "websocket-broadcast",
                                      "notification-delivery", "job-dlq"}


def test_retry_delays_follow_the_schedule_and_repeat_its_last():
    delays = Settings().retry_delays
    assert delays == (1, 2, 4, 8, 16, 30)
    assert [retry_delay(n, delays=delays) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    short = Settings.from_env(environ={"COSMIC_RABBITMQ_RETRY_DELAYS": " 1, 3"}).retry_delays
    assert [retry_delay(n, delays=short) for n in range(1, 5)] == [1, 3, 3, 3]
    assert set(all_queue_arguments(queue_type="classic", retry_delays=short)) >= {
        "notification-delivery.retry.1s", "notification-delivery.retry.3s"}
    assert "notification-delivery.retry.2s" not in all_queue_arguments(queue_type="classic", retry_delays=short)


@pytest.mark.parametrize("raw", ["0,1", "2,1", "1,1", "1,x", "1.5", ",", "1,100000"])
def test_a_bad_retry_schedule_is_refused_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="COSMIC_RABBITMQ_RETRY_DELAYS"):
        Settings.from_env(environ={"COSMIC_RABBITMQ_RETRY_DELAYS": raw})


def test_mismatch_names_queue_and_arguments():
    diff = diff_arguments({"x-max-length": 10}, {"x-max-length": 100_000, "x-queue-type": "classic"})
    assert diff == {"x-max-length": (10, 100_000)}  # absent x-queue-type means classic
    text = str(TopologyMismatch({"job-events-api": diff}))
    assert "job-events-api" in text and "x-max-length (existing 10, wanted 100000)" in text
    assert "nothing was deleted" in text


def test_original_route_of_dead_letters():
    assert original_route({"x-original-routing-key": b"job.failed", "x-original-exchange": "job.events"}) == (
        "job.events", "job.failed")
    expired = {"x-death": [{"exchange": "job.events", "routing-keys": ["job.submitted"], "reason": "expired"}]}
    assert original_route(expired) == ("job.events", "job.submitted")
    assert original_route({}) is None


def test_settings():
    s = Settings.from_env(environ={"COSMIC_RABBITMQ_QUEUE_TYPE": "quorum", "COSMIC_RABBITMQ_MAX_ATTEMPTS": "3"})
    assert (s.rabbitmq_queue_type, s.rabbitmq_max_attempts, s.rabbitmq_bridge_enabled) == ("quorum", 3, True)
    assert Settings().rabbitmq_queue_type == "classic"
    with pytest.raises(ConfigError):
        Settings.from_env(environ={"COSMIC_RABBITMQ_QUEUE_TYPE": "stream"})
    redacted = Settings(rabbitmq_url="amqp://guest:pw@h:5672/v").rabbitmq_url_redacted
    assert redacted == "amqp://guest:***@h:5672/v"


def test_the_bridge_gives_a_record_and_its_json_form_the_same_message_and_route(memory_registry):  # noqa: ANN001
    """The owning agents copy an event's JSON form (``decode_json``): the message and route of an event's JSON form
    equal those of its record (what ``publish(event)`` gives)."""
    workload = build_workload(jobs=30, seed=5)
    records = [(JOB_LIFECYCLE, e) for e in workload.deliveries]
    job = workload.deliveries[0]
    records += [(JOB_METRICS, s) for s in metrics_samples(job=job, rng=random.Random(1), at=job.timestamp, elapsed_s=60.0)]
    records.append((NOTIFICATIONS, NotificationSent(
        event_id=str(uuid.uuid4()), event_type="NotificationSent", timestamp=job.timestamp, correlation_id="c-1",
        user_id="alice", schema_version=1, notification_id=str(uuid.uuid4()), channel="WEBSOCKET", severity="INFO",
        title="Job j completed", body="Job j completed", job_id="j")))
    kinds = set()
    for topic, event in records:
        data = codecs.for_topic(topic).encode(event)
        as_json = codecs.for_topic(topic).decode_json(data)
        record = codecs.for_topic(topic).decode(data)
        assert route_for(as_json) == route_for(record)
        one, other = event_message(as_json), event_message(record)
        assert one.body == other.body and one.properties == other.properties, event.event_type
        assert event_frame(as_json) == event_frame(record) == (one.body, one.properties)  # what the bridge sends
        kinds.add(event.event_type)
    assert {"JobSubmitted", "JobQueued", "JobStatusChanged", "JobCompleted", "JobMetricsSample",
            "NotificationSent"} <= kinds
