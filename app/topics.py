"""The Faust topic objects of the service, named from :mod:`app.topic_specs` plus the
settings' ``topic_prefix`` (empty in production; a uuid in tests)."""

from __future__ import annotations

from app.main import app, settings
from app.models import JobLifecycleEvent
from app.topic_specs import spec_by_name


def _name(topic: str) -> str:
    return settings.topic_prefix + topic


job_lifecycle_topic = app.topic(
    _name("job-lifecycle"),
    key_type=str,
    value_type=JobLifecycleEvent,
    partitions=spec_by_name("job-lifecycle").partitions,
)
