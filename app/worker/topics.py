"""The Faust topic objects the agents consume: raw bytes, decoded inside the agent (see
:mod:`app.worker.streams`), named from :mod:`app.core.topic_specs` plus ``COSMIC_TOPIC_PREFIX``."""

from __future__ import annotations

from app.core.topic_specs import AUDIT_TRAIL, JOB_LIFECYCLE, JOB_METRICS, NOTIFICATIONS, SYSTEM_HEALTH, spec_by_name
from app.worker.streams import raw_topic


def _topic(name: str):  # noqa: ANN202
    return raw_topic(name, partitions=spec_by_name(name).partitions)


job_lifecycle_topic = _topic(JOB_LIFECYCLE)
audit_trail_topic = _topic(AUDIT_TRAIL)
notifications_topic = _topic(NOTIFICATIONS)
job_metrics_topic = _topic(JOB_METRICS)
system_health_topic = _topic(SYSTEM_HEALTH)
