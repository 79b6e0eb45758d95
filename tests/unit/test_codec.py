"""The Confluent Avro codec without a registry server (an in-memory client stands in)."""

from __future__ import annotations

import io
import random
import struct

import fastavro
import pytest
from faust.serializers.registry import Registry

from app.codecs import Codecs, codec_name
from app.demo import lifecycle_events
from app.errors import EventDecodeError, EventEncodeError
from app.models import JobSubmitted
from app.schemas import topic_schema
from app.settings import Settings


@pytest.fixture
def client(registry_client):  # noqa: ANN001
    return registry_client


@pytest.fixture
def codecs(client):
    return Codecs(settings=Settings(topic_prefix="t-"), client=client)


def _events():
    rng = random.Random(7)
    events = []
    for outcome in ("COMPLETED", "FAILED", "CANCELLED"):
        events += lifecycle_events(job_id=f"job-{outcome}", user_id="alice", rng=rng, outcome=outcome)
    return events


def test_every_lifecycle_event_round_trips_in_confluent_framing(codecs, client):
    codec = codecs.for_topic("job-lifecycle")
    for event in _events():
        data = codec.encode(event)
        magic, schema_id = struct.unpack(">bI", data[:5])
        assert magic == 0 and schema_id == codec.writer_schema_id()
        # The body is plain Avro binary of the topic's union: fastavro alone reads it.
        name, body = fastavro.schemaless_reader(
            io.BytesIO(data[5:]), fastavro.parse_schema(topic_schema("job-lifecycle")), return_record_name=True
        )
        assert name == type(event)._options.namespace
        decoded = codec.decode(data)
        assert type(decoded) is type(event)
        assert decoded.to_representation() == event.to_representation()
    assert client.subjects == {"t-job-lifecycle-value": {str(codec.schema): 1}}


def test_faust_rebuilds_the_right_class_from_the_codec_output(codecs):
    codecs.register_with_faust()
    registry = Registry()
    for event in _events():
        data = registry.dumps_value(None, event, serializer=codec_name("job-lifecycle"))
        back = registry.loads_value(None, data, serializer=codec_name("job-lifecycle"))
        assert type(back) is type(event) and back.event_id == event.event_id


def test_schema_ids_are_fetched_once_and_cached(codecs, client):
    codec = codecs.for_topic("job-lifecycle")
    data = [codec.encode(e) for e in _events()]
    calls = client.calls
    fresh = Codecs(settings=Settings(topic_prefix="t-"), client=client).for_topic("job-lifecycle")
    for blob in data:
        fresh.decode(blob)
    assert client.calls - calls == 1  # one get_by_id for the writer schema, then cached


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "not-framed"),
        (b'{"event_type": "JobSubmitted"}', "not-framed"),
        (b"\x01\x00\x00\x00\x01abc", "not-framed"),
        (b"\x00\x00\x00\x00\x63\x02", "unknown-schema-id"),
    ],
)
def test_bytes_that_are_not_our_avro_raise_the_project_decode_error(codecs, blob, reason):
    with pytest.raises(EventDecodeError) as info:
        codecs.for_topic("job-lifecycle").decode(blob)
    assert info.value.reason == reason


def test_truncated_avro_body_is_a_decode_error_not_a_crash(codecs):
    codec = codecs.for_topic("job-lifecycle")
    data = codec.encode(_events()[0])
    with pytest.raises(EventDecodeError) as info:
        codec.decode(data[: len(data) // 2])
    assert info.value.reason == "bad-avro"


def test_without_auto_registration_an_unregistered_schema_is_an_encode_error(client):
    strict = Codecs(settings=Settings(topic_prefix="t-", schema_auto_register=False), client=client)
    event = _events()[0]
    with pytest.raises(EventEncodeError, match="auto-registration is off"):
        strict.for_topic("job-lifecycle").encode(event)
    # Once a deploy step registered it, the strict codec finds and uses the same id.
    sid = Codecs(settings=Settings(topic_prefix="t-"), client=client).for_topic("job-lifecycle").writer_schema_id()
    fresh = Codecs(settings=Settings(topic_prefix="t-", schema_auto_register=False), client=client)
    assert struct.unpack(">bI", fresh.for_topic("job-lifecycle").encode(event)[:5])[1] == sid


def test_an_event_of_another_topic_is_refused(codecs):
    event = _events()[0]
    with pytest.raises(EventEncodeError):
        codecs.for_topic("job-metrics").encode(event)
    assert codecs.for_event(event) is codecs.for_topic("job-lifecycle")
    assert isinstance(event, JobSubmitted)
