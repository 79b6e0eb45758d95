"""app.core.topic_specs: the topic names (the external contract) and prefix stripping."""

from __future__ import annotations

from app.core import topic_specs
from app.core.topic_specs import DLQ_SUFFIX, all_topic_specs, unprefixed


def test_topic_names_are_unchanged():
    assert (topic_specs.JOB_LIFECYCLE, topic_specs.JOB_METRICS, topic_specs.AUDIT_TRAIL, topic_specs.NOTIFICATIONS,
            topic_specs.SYSTEM_HEALTH) == ("job-lifecycle", "job-metrics", "audit-trail", "notifications",
                                           "system-health")
    assert topic_specs.NOTIFICATION_PREFERENCES == "notification-preferences"
    assert topic_specs.NOTIFICATION_OUTCOMES == "notification-outcomes"
    assert DLQ_SUFFIX == ".dlq"
    assert [s.name for s in all_topic_specs()] == [
        "job-lifecycle", "job-lifecycle.dlq", "job-metrics", "job-metrics.dlq", "audit-trail", "audit-trail.dlq",
        "notifications", "notifications.dlq", "system-health", "system-health.dlq", "notification-preferences",
        "notification-outcomes",
    ]


def test_unprefixed():
    assert unprefixed(topic="run1-job-lifecycle", prefix="run1-") == "job-lifecycle"
    assert unprefixed(topic="run1-job-lifecycle.dlq", prefix="run1-") == "job-lifecycle.dlq"
    assert unprefixed(topic="job-lifecycle", prefix="") == "job-lifecycle"
    assert unprefixed(topic="job-lifecycle", prefix="run1-") == "job-lifecycle"  # not prefixed: unchanged
