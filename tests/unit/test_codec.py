"""The Confluent Avro codec without a registry server (an in-memory client stands in)."""

from __future__ import annotations

import copy
import io
import random
import struct

import fastavro
import pytest
from faust.serializers.registry import Registry

from app.core.codecs import Codecs, codec_name
from app.core.errors import EventDecodeError, EventEncodeError
from app.core.models import JobSubmitted
from app.core.schemas import topic_schema
from app.core.settings import Settings
from app.ops.demo import lifecycle_events


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
@pytest.mark.parametrize("decoder", ["decode", "decode_json", "decode_both"])
def test_bytes_that_are_not_our_avro_raise_the_project_decode_error(codecs, blob, reason, decoder):
    with pytest.raises(EventDecodeError) as info:
        getattr(codecs.for_topic("job-lifecycle"), decoder)(blob)
    assert info.value.reason == reason


@pytest.mark.parametrize("decoder", ["decode", "decode_json", "decode_both"])
def test_truncated_avro_body_is_a_decode_error_not_a_crash(codecs, decoder):
    codec = codecs.for_topic("job-lifecycle")
    data = codec.encode(_events()[0])
    with pytest.raises(EventDecodeError) as info:
        getattr(codec, decoder)(data[: len(data) // 2])
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


# -- decode_json: the replay's fast path ---------------------------------------------------
def _example_events():
    from support.event_examples import EXAMPLES, NOW
    from app.core.validation import parse_event

    events = [parse_event(data=example, now=NOW) for example in EXAMPLES.values()]
    events.append(parse_event(data={**EXAMPLES["JobQueued"], "user_id": None}, now=NOW))
    return events


def _frame(schema_id: int, schema: object, name: str, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), (name, record))
    return out.getvalue()


def test_decode_json_equals_the_event_as_json_for_every_event_type(codecs):
    from app.core.validation import event_to_json

    for event in _example_events() + _events():
        codec = codecs.for_event(event)
        data = codec.encode(event)
        assert codec.decode_json(data) == event_to_json(codec.decode(data)), type(event).__name__
        record, as_json = codec.decode_both(data)
        assert record == codec.decode(data) == event and as_json == codec.decode_json(data), type(event).__name__
        assert type(record) is type(event) and record.timestamp.utcoffset().total_seconds() == 0
    # the writer schema is ours: no schema resolution on either path
    assert all(plan.reader is None and plan.plain_fields is not None
               for codec in codecs.by_topic.values() for plan in codec._writer_plans.values())


def test_a_writer_schema_that_differs_only_in_docs_and_defaults_reads_without_resolution(codecs, client):
    from schema_registry.client.schema import AvroSchema

    from app.core.validation import event_to_json

    def undocumented(schema):
        if isinstance(schema, dict):
            return {k: undocumented(v) for k, v in schema.items() if k not in ("doc", "default")}
        if isinstance(schema, list):
            return [undocumented(v) for v in schema]
        return schema

    codec = codecs.for_topic("job-lifecycle")
    writer = undocumented(topic_schema("job-lifecycle"))
    sid = client.register("other-value", AvroSchema(writer))
    event = _events()[0]
    ours = codec.encode(event)
    data = struct.pack(">bI", 0, sid) + ours[5:]
    assert codec.decode_json(data) == event_to_json(codec.decode(data)) == event_to_json(event)
    assert codec.decode_both(data) == (codec.decode(data), codec.decode_json(data))
    assert codec._writer_plans[sid].reader is None


def test_an_evolved_writer_schema_is_resolved_against_ours(codecs, client):
    """A producer on a newer schema (an extra field with a default): both decode paths resolve
    it to our records and agree."""
    from schema_registry.client.schema import AvroSchema

    from app.core.validation import event_to_json

    codec = codecs.for_topic("job-lifecycle")
    writer = copy.deepcopy(topic_schema("job-lifecycle"))
    for branch in writer:
        if branch["name"] == "JobQueued":
            branch["fields"].append({"name": "cluster_zone", "type": "string", "default": "a"})
    sid = client.register("newer-value", AvroSchema(writer))
    event = _example_events()[1]
    record = {**event_to_json(event), "cluster_zone": "east"}
    record["timestamp"] = event.timestamp
    data = _frame(sid, writer, "cosmic_horizons.events.JobQueued", record)
    plan = codec._writer_plan(sid)
    assert plan.reader is not None
    assert codec.decode_json(data) == event_to_json(codec.decode(data)) == event_to_json(event)
    assert codec.decode_both(data) == (codec.decode(data), codec.decode_json(data))


def test_decode_json_normalises_uuids_as_decode_does_and_refuses_non_uuids(codecs):
    from app.core.validation import event_to_json

    codec = codecs.for_topic("job-lifecycle")
    event = _example_events()[1]
    sid = codec.writer_schema_id()
    record = {**event_to_json(event), "timestamp": event.timestamp}
    plain_writer = codec._writer_plan(sid).plain_writer  # ours without logical types: any string goes in
    upper = {**record, "event_id": record["event_id"].upper(), "timestamp": int(event.timestamp.timestamp() * 1000)}
    data = _frame(sid, plain_writer, "cosmic_horizons.events.JobQueued", upper)
    assert codec.decode_json(data)["event_id"] == record["event_id"] == codec.decode(data).event_id
    assert codec.decode_both(data) == (codec.decode(data), codec.decode_json(data))
    bad = _frame(sid, plain_writer, "cosmic_horizons.events.JobQueued", {**upper, "event_id": "not-a-uuid"})
    for decode in (codec.decode, codec.decode_json, codec.decode_both):
        with pytest.raises(EventDecodeError) as info:
            decode(bad)
        assert info.value.reason == "bad-avro"


def test_format_epoch_ms_matches_datetime_formatting():
    from datetime import datetime, timedelta, timezone

    from app.core.timeutil import format_epoch_ms, format_timestamp

    rng = random.Random(3)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    samples = [0, -1, 999, 1000, -1000, 1_748_779_200_123, 253_402_300_799_999]
    samples += [rng.randint(-10**11, 10**13) for _ in range(5000)]
    for ms in samples:
        assert format_epoch_ms(ms) == format_timestamp(epoch + timedelta(milliseconds=ms)), ms


# -- the hot path's shortcuts equal Faust's own paths ---------------------------------------
def test_encoding_a_record_equals_encoding_its_faust_representation(codecs):
    for event in _example_events() + _events():
        codec = codecs.for_event(event)
        assert codec.encode(event) == codec.dumps(event.to_representation()), type(event).__name__


def test_decoded_events_equal_what_faust_from_data_builds(codecs):
    from app.core.models import EVENT_CLASSES

    for event in _example_events() + _events():
        codec = codecs.for_event(event)
        data = codec.encode(event)
        fast = codec.decode(data)
        loaded = codec._loads(data)
        cls = EVENT_CLASSES[loaded["__faust"]["ns"].rsplit(".", 1)[-1]]
        slow = cls.from_data(loaded, preferred_type=cls)
        assert type(fast) is type(slow) and fast == slow and fast.__dict__ == slow.__dict__, type(event).__name__
        assert fast.to_representation() == slow.to_representation()
        assert codec.encode(fast) == data


# -- integer ranges: the codec's own check ----------------------------------------------------
def _submitted(**changes):  # noqa: ANN003, ANN202
    event = _events()[0]
    assert isinstance(event, JobSubmitted)
    return event.derive(**changes)


@pytest.mark.parametrize(("changes", "field", "kind"), [
    ({"priority": 2**31}, "priority", "int"),
    ({"priority": -(2**31) - 1}, "priority", "int"),
    ({"schema_version": 2**40}, "schema_version", "int"),
    ({"timestamp": 2**63}, "timestamp", "long"),
])
def test_an_integer_outside_its_avro_range_is_an_error_naming_the_field(codecs, changes, field, kind):
    from app.core.codecs import FieldRangeError

    with pytest.raises(FieldRangeError) as info:
        codecs.for_topic("job-lifecycle").encode(_submitted(**changes))
    assert info.value.field == field and kind in str(info.value) and field in str(info.value)
    assert isinstance(info.value, EventEncodeError)


def test_a_nested_integer_outside_its_range_names_its_path(codecs):
    from app.core.codecs import FieldRangeError
    from app.core.models import ResourceRequest

    event = _submitted(resource_request=ResourceRequest(nodes=2**31, gpus=0, walltime="01:00:00"))
    with pytest.raises(FieldRangeError) as info:
        codecs.for_topic("job-lifecycle").encode(event)
    assert info.value.field == "resource_request.nodes"


def test_the_edges_of_the_ranges_encode(codecs):
    codec = codecs.for_topic("job-lifecycle")
    for value in (2**31 - 1, -(2**31)):
        assert codec.decode(codec.encode(_submitted(priority=value))).priority == value


def test_integer_fields_cover_nested_records_and_skip_enums():
    from app.core.codecs import integer_fields

    fields = integer_fields(topic_schema("job-lifecycle"))
    ns = "cosmic_horizons.events."
    assert dict(fields[ns + "ResourceRequest"]) == {"nodes": "int", "gpus": "int"}
    assert dict(fields[ns + "JobSubmitted"])["resource_request"] == ("record", ns + "ResourceRequest")
    assert "new_status" not in dict(fields[ns + "JobStatusChanged"])  # an enum: nothing to check
