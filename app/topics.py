"""The Faust topic objects of the service, named from :mod:`app.topic_specs` plus the
settings' ``topic_prefix`` (empty in production; a uuid in tests). Values are Confluent
Avro (codec ``avro:<topic>``); the value type is left to the codec, which names the event
class of each record (several event types share a topic)."""

from __future__ import annotations

from app.codecs import codec_name
from app.main import app, settings
from app.topic_specs import spec_by_name


def full_topic_name(topic: str) -> str:
    return settings.topic_prefix + topic


def _avro_topic(topic: str):  # noqa: ANN202 - faust.TopicT
    return app.topic(
        full_topic_name(topic),
        key_type=str,
        key_serializer="raw",
        value_type=None,
        value_serializer=codec_name(topic),
        partitions=spec_by_name(topic).partitions,
    )


job_lifecycle_topic = _avro_topic("job-lifecycle")
