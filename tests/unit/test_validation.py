"""app.core.validation: untrusted JSON → event records, or an EventValidationError naming the field."""

from __future__ import annotations

import copy
import io
import json
import math
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest

from app.core.errors import CosmicError, EventValidationError
from app.core.models import EVENT_CLASSES, TOPIC_EVENTS, JobQueued, JobSubmitted, ResourceRequest
from app.core.schemas import topic_schema
from app.core.topic_specs import SOURCE_TOPICS
from app.core.validation import (
    MAX_BATCH_SIZE,
    check_avro,
    event_to_json,
    key_of,
    parse_event,
    parse_events,
    topic_of,
)

from support.event_examples import EVENT_ID, EXAMPLES, NOW  # noqa: E402


def example(kind: str, /, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLES[kind])
    data.update(changes)
    return data


def rejected(data: object, *, now: datetime = NOW) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        parse_event(data=data, now=now)
    return info.value


def avro_roundtrip(event) -> dict[str, Any]:
    """Encode the event with fastavro exactly as its topic's union, decode it again."""
    topic = topic_of(event)
    schema = fastavro.parse_schema(copy.deepcopy(topic_schema(topic)))
    datum = event_to_json(event)
    datum["timestamp"] = event.timestamp
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, (type(event)._options.namespace, datum))
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema, schema, return_record_name=True)


# -- valid events --------------------------------------------------------------------------
def test_every_event_type_has_an_example():
    assert set(EXAMPLES) == set(EVENT_CLASSES)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_valid_event_round_trips_through_json(event_type: str):
    event = parse_event(data=example(event_type), now=NOW)
    assert type(event) is EVENT_CLASSES[event_type]
    as_json = event_to_json(event)
    text = json.dumps(as_json, allow_nan=False)  # plain JSON types only
    assert "__faust" not in text
    again = parse_event(data=json.loads(text), now=NOW)
    assert event_to_json(again) == as_json
    assert type(again) is type(event)


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_valid_event_encodes_as_avro(event_type: str):
    event = parse_event(data=example(event_type), now=NOW)
    name, decoded = avro_roundtrip(event)
    assert name == f"cosmic_horizons.events.{event_type}"
    assert str(decoded["event_id"]) == event.event_id
    assert decoded["timestamp"] == event.timestamp


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_topic_and_key_follow_the_topic_specs(event_type: str):
    event = parse_event(data=example(event_type), now=NOW)
    topic = topic_of(event)
    assert type(event) in TOPIC_EVENTS[topic]
    key_field = {spec.name: spec.key for spec in SOURCE_TOPICS}[topic]
    assert key_of(event) == getattr(event, key_field)


def test_server_fills_envelope_fields_when_absent():
    event = parse_event(data=example("JobQueued"), now=NOW)
    assert uuid.UUID(event.event_id).version == 4 and str(uuid.UUID(event.event_id)) == event.event_id
    assert uuid.UUID(event.correlation_id).version == 4
    assert event.correlation_id != event.event_id
    assert event.timestamp == datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
    assert event.schema_version == 1
    assert event.user_id is None
    assert event.event_type == "JobQueued"
    other = parse_event(data=example("JobQueued"), now=NOW)
    assert other.event_id != event.event_id


def test_optional_fields_default_to_null():
    data = example("JobQueued")
    del data["queue_position"]
    assert parse_event(data=data, now=NOW).queue_position is None
    data = example("AuditRecord")
    for name in ("before", "after", "source_event_id"):
        del data[name]
    event = parse_event(data=data, now=NOW)
    assert (event.before, event.after, event.source_event_id) == (None, None, None)


def test_given_envelope_fields_are_kept():
    data = example("JobCancelled", event_id=EVENT_ID, correlation_id="req-42", schema_version=3,
                   timestamp="2025-06-01T11:00:00.5Z", user_id="bob")
    event = parse_event(data=data, now=NOW)
    assert (event.event_id, event.correlation_id, event.schema_version, event.user_id) == (
        EVENT_ID, "req-42", 3, "bob")
    assert event.timestamp == datetime(2025, 6, 1, 11, 0, 0, 500000, tzinfo=timezone.utc)


def test_ints_are_accepted_for_doubles_and_stored_as_floats():
    event = parse_event(data=example("JobCompleted"), now=NOW)
    assert event.metrics_summary.execution_time_s == 3600.0
    assert isinstance(event.metrics_summary.execution_time_s, float)
    health = parse_event(data=example("SystemHealthReport"), now=NOW)
    assert health.metrics == {"consumer_lag": 1500.0, "error_rate": 0.02}
    assert all(isinstance(v, float) for v in health.metrics.values())


def test_event_to_json_shape():
    event = parse_event(data=example("JobSubmitted", timestamp=1717243200123, event_id=EVENT_ID), now=NOW)
    as_json = event_to_json(event)
    assert as_json["timestamp"] == "2024-06-01T12:00:00.123Z"
    assert as_json["resource_request"] == {"nodes": 4, "gpus": 2, "walltime": "48:00:00"}
    assert list(as_json)[:6] == ["event_id", "event_type", "timestamp", "correlation_id", "user_id", "schema_version"]
    assert as_json["event_id"] == EVENT_ID
    zero_ms = parse_event(data=example("JobQueued", timestamp="2024-06-01T12:00:00Z"), now=NOW)
    assert event_to_json(zero_ms)["timestamp"] == "2024-06-01T12:00:00.000Z"


# -- whole body and event_type -------------------------------------------------------------
@pytest.mark.parametrize("data", [[], "JobQueued", None, 3, True])
def test_event_must_be_an_object(data: object):
    error = rejected(data)
    assert error.field == ""
    assert error.reason == "an event must be a JSON object"
    assert error.index is None


def test_event_type_missing_or_unknown_lists_the_known_types():
    for data in ({"job_id": "j"}, example("JobQueued", event_type="JobExploded"), example("JobQueued", event_type=7)):
        error = rejected(data)
        assert error.field == "event_type"
        for name in EVENT_CLASSES:
            assert name in error.reason


def test_error_to_dict():
    error = rejected(example("JobQueued", queue_position="3"))
    assert isinstance(error, CosmicError)
    assert error.to_dict() == {"error": "invalid event", "field": "queue_position",
                               "reason": "expected an integer, got string"}
    assert "queue_position" in str(error)
    batch = EventValidationError(field="job_id", reason="x", index=4)
    assert batch.to_dict() == {"error": "invalid event", "field": "job_id", "reason": "x", "index": 4}


# -- unknown and missing fields ------------------------------------------------------------
@pytest.mark.parametrize("name", ["jobid", "__faust", "JOB_ID", "metrics_summary"])
def test_unknown_field_is_rejected(name: str):
    error = rejected(example("JobQueued", **{name: 1}))
    assert (error.field, error.reason) == (name, "unknown field")


def test_unknown_nested_field_is_rejected():
    data = example("JobSubmitted")
    data["resource_request"]["cores"] = 8
    error = rejected(data)
    assert (error.field, error.reason) == ("resource_request.cores", "unknown field")


@pytest.mark.parametrize(
    ("event_type", "path"),
    [("JobSubmitted", "tacc_system"), ("JobFailed", "retriable"), ("AuditRecord", "outcome"),
     ("JobSubmitted", "resource_request.gpus"), ("JobCompleted", "metrics_summary.memory_gb_max"),
     ("SystemHealthReport", "metrics")],
)
def test_required_field_missing(event_type: str, path: str):
    data = example(event_type)
    parent, _, name = path.rpartition(".")
    del (data[parent] if parent else data)[name]
    error = rejected(data)
    assert error.field == path
    assert "missing" in error.reason


def test_null_for_a_required_field_is_rejected():
    error = rejected(example("JobQueued", queue_name=None))
    assert error.field == "queue_name" and "null" in error.reason


# -- event_id ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    ["not-a-uuid", "", "5f1c2b0e8c4a4b559d7f2a4f8f3b6a11", "{5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11}",
     "urn:uuid:5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11", " 5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11",
     "5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a1g", "00000000-0000-0000-0000-000000000000", 12, None],
)
def test_bad_event_id(value: object):
    error = rejected(example("JobQueued", event_id=value))
    assert error.field == "event_id"
    assert "UUID" in error.reason or "null" in error.reason


def test_event_id_is_stored_lower_case():
    event = parse_event(data=example("JobQueued", event_id=EVENT_ID.upper()), now=NOW)
    assert event.event_id == EVENT_ID


# -- timestamp -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-01T14:30:00+02:00", datetime(2025, 6, 1, 12, 30, tzinfo=timezone.utc)),
        ("2025-06-01T05:30:00-0530", datetime(2025, 6, 1, 11, 0, tzinfo=timezone.utc)),
        ("2025-06-01T12:30:00Z", datetime(2025, 6, 1, 12, 30, tzinfo=timezone.utc)),
        ("2025-06-01 12:30:00.987654Z", datetime(2025, 6, 1, 12, 30, 0, 987000, tzinfo=timezone.utc)),
        ("2025-06-01T12:30:00.123456789Z", datetime(2025, 6, 1, 12, 30, 0, 123000, tzinfo=timezone.utc)),
        ("2025-06-01T12:30", datetime(2025, 6, 1, 12, 30, tzinfo=timezone.utc)),  # naive = UTC
        (1748780000123, datetime(2025, 6, 1, 12, 13, 20, 123000, tzinfo=timezone.utc)),
        (946684800000, datetime(2000, 1, 1, tzinfo=timezone.utc)),
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=timezone.utc)),
        ("2025-06-01T13:00:00.123Z", datetime(2025, 6, 1, 13, 0, 0, 123000, tzinfo=timezone.utc)),  # now + 1 h
    ],
)
def test_timestamp_accepted_forms(value: object, expected: datetime):
    event = parse_event(data=example("JobQueued", timestamp=value), now=NOW)
    assert event.timestamp == expected
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.timestamp.microsecond % 1000 == 0


@pytest.mark.parametrize(
    "value",
    [946684799999, "1999-12-31T23:59:59.999Z", "2000-01-01T00:30:00+01:00",
     "2025-06-01T13:00:00.124Z", "2025-06-01T15:00:01+02:00", 1748782800124,
     -1, 0, 10**20, "9999-12-31T23:59:59-12:00"],
)
def test_timestamp_out_of_range(value: object):
    error = rejected(example("JobQueued", timestamp=value))
    assert error.field == "timestamp"
    assert "out of range" in error.reason
    assert "2000-01-01T00:00:00.000Z" in error.reason and "2025-06-01T13:00:00.123Z" in error.reason


@pytest.mark.parametrize(
    "value",
    [1748780000123.0, 1.5, True, False, "1748780000123", "yesterday", "2025-06-01", "2025-06-01T25:00:00Z",
     "2025-02-30T12:00:00Z", "2025-06-01T12:00:00+25:00", "2025-06-01t12:00:00z", "20250601T120000Z",
     "2025-06-01T12:00:00 Z", [], {}, None],
)
def test_timestamp_bad_values(value: object):
    error = rejected(example("JobQueued", timestamp=value))
    assert error.field == "timestamp"
    assert error.reason


def test_naive_now_means_utc():
    event = parse_event(data=example("JobQueued"), now=NOW.replace(tzinfo=None))
    assert event.timestamp == datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


# -- envelope: schema_version, correlation_id, user_id -------------------------------------
@pytest.mark.parametrize("value", [0, -1, "1", True, 1.0, None, 2**31])
def test_bad_schema_version(value: object):
    assert rejected(example("JobQueued", schema_version=value)).field == "schema_version"


@pytest.mark.parametrize("value", ["", "   ", 5, None, ["a"]])
def test_bad_correlation_id(value: object):
    assert rejected(example("JobQueued", correlation_id=value)).field == "correlation_id"


@pytest.mark.parametrize("value", ["", " ", 42, False, {"id": "a"}])
def test_bad_user_id(value: object):
    assert rejected(example("JobQueued", user_id=value)).field == "user_id"


def test_user_id_may_be_null_except_for_notifications():
    assert parse_event(data=example("JobQueued", user_id=None), now=NOW).user_id is None
    for event_type in ("NotificationSent", "NotificationRead"):
        for data in (example(event_type, user_id=None), {k: v for k, v in EXAMPLES[event_type].items() if k != "user_id"}):
            error = rejected(data)
            assert error.field == "user_id"
            assert "key" in error.reason and "notifications" in error.reason


# -- field types -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event_type", "field", "value", "reason_part"),
    [
        ("JobSubmitted", "priority", True, "expected an integer, got boolean"),
        ("JobSubmitted", "priority", 5.0, "expected an integer, got number"),
        ("JobSubmitted", "priority", "5", "expected an integer, got string"),
        ("JobFailed", "retry_count", False, "got boolean"),
        ("JobFailed", "retry_count", 2**31, "out of range"),
        ("JobMetricsSample", "gpu_id", -(2**31) - 1, "out of range"),
        ("JobFailed", "retriable", 1, "expected true or false, got integer"),
        ("JobFailed", "retriable", "true", "got string"),
        ("JobSubmitted", "estimated_cost_usd", True, "expected a number, got boolean"),
        ("JobSubmitted", "estimated_cost_usd", "12.5", "got string"),
        ("JobSubmitted", "estimated_cost_usd", float("nan"), "finite"),
        ("JobSubmitted", "estimated_cost_usd", float("inf"), "finite"),
        ("JobMetricsSample", "io_mb_s", float("-inf"), "finite"),
        ("JobMetricsSample", "cpu_pct", 10**400, "out of range"),
        ("JobSubmitted", "tacc_system", 3, "expected a string, got integer"),
        ("JobSubmitted", "job_id", "", "non-empty"),
        ("JobMetricsSample", "node", "", "non-empty"),
        ("AuditRecord", "resource_id", " ", "non-empty"),
        ("SystemHealthReport", "component", "", "non-empty"),
        ("NotificationSent", "notification_id", "", "non-empty"),
        ("JobSubmitted", "job_type", "\ud800", "Unicode"),
        ("JobSubmitted", "resource_request", "4 nodes", "expected an object, got string"),
        ("JobSubmitted", "resource_request", None, "null"),
        ("JobCompleted", "metrics_summary", [1, 2], "expected an object, got array"),
        ("SystemHealthReport", "metrics", [1.0], "expected an object"),
        ("SystemHealthReport", "metrics", None, "null"),
    ],
)
def test_wrong_types(event_type: str, field: str, value: object, reason_part: str):
    error = rejected(example(event_type, **{field: value}))
    assert error.field == field
    assert reason_part in error.reason


def test_int32_bounds_are_accepted():
    assert parse_event(data=example("JobFailed", retry_count=2**31 - 1), now=NOW).retry_count == 2**31 - 1
    assert parse_event(data=example("JobMetricsSample", gpu_id=2**31 - 1), now=NOW).gpu_id == 2**31 - 1


def test_free_text_may_be_empty():
    assert parse_event(data=example("NotificationRead", body="", title=""), now=NOW).body == ""


@pytest.mark.parametrize(
    ("value", "path", "reason_part"),
    [
        ({"lag": float("nan")}, "metrics.lag", "finite"),
        ({"lag": True}, "metrics.lag", "got boolean"),
        ({"lag": "1"}, "metrics.lag", "got string"),
        ({"lag": None}, "metrics.lag", "got null"),
        ({"\udc00": 1.0}, "metrics", "Unicode"),
    ],
)
def test_float_map_values(value: object, path: str, reason_part: str):
    error = rejected(example("SystemHealthReport", metrics=value))
    assert error.field == path
    assert reason_part in error.reason


def test_empty_metrics_map_is_fine():
    assert parse_event(data=example("SystemHealthReport", metrics={}), now=NOW).metrics == {}


# -- nested records ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "walltime", ["1:00:00", "01:60:00", "01:00:60", "01:00", "abc", "01:00:00 ", "-1:00:00", "١٢:00:00", 3600],
)
def test_bad_walltime(walltime: object):
    data = example("JobSubmitted")
    data["resource_request"]["walltime"] = walltime
    error = rejected(data)
    assert error.field == "resource_request.walltime"
    assert "HH:MM:SS" in error.reason or "below 60" in error.reason or "string" in error.reason


@pytest.mark.parametrize("walltime", ["00:30:00", "24:00:00", "168:59:59", "1000:00:00"])
def test_good_walltime(walltime: str):
    data = example("JobSubmitted")
    data["resource_request"]["walltime"] = walltime
    assert parse_event(data=data, now=NOW).resource_request.walltime == walltime


@pytest.mark.parametrize(
    ("field", "value", "reason_part"),
    [("nodes", 0, ">= 1"), ("nodes", True, "boolean"), ("gpus", -1, ">= 0"), ("gpus", 1.5, "integer")],
)
def test_bad_resource_request(field: str, value: object, reason_part: str):
    data = example("JobSubmitted")
    data["resource_request"][field] = value
    error = rejected(data)
    assert error.field == f"resource_request.{field}"
    assert reason_part in error.reason


def test_nested_metrics_summary_nan():
    data = example("JobCompleted")
    data["metrics_summary"]["cpu_pct_mean"] = float("nan")
    assert rejected(data).field == "metrics_summary.cpu_pct_mean"


# -- enums -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event_type", "field", "value", "symbols"),
    [
        ("JobStatusChanged", "new_status", "DONE", ("SUBMITTED", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")),
        ("JobStatusChanged", "previous_status", "queued", ("QUEUED",)),
        ("NotificationSent", "channel", "SMS", ("WEBSOCKET", "WEBHOOK", "EMAIL")),
        ("NotificationRead", "severity", 1, ("INFO", "WARNING", "ERROR", "CRITICAL")),
        ("AuditRecord", "outcome", "OK", ("SUCCESS", "FAILURE", "DENIED")),
        ("SystemHealthReport", "status", None, ("OK", "DEGRADED", "DOWN")),
    ],
)
def test_bad_enum_symbol_lists_the_symbols(event_type: str, field: str, value: object, symbols: tuple[str, ...]):
    error = rejected(example(event_type, **{field: value}))
    assert error.field == field
    for symbol in symbols:
        assert symbol in error.reason or value is None


# -- domain rules ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("JobSubmitted", "priority", 11), ("JobSubmitted", "priority", -1),
        ("JobSubmitted", "estimated_cost_usd", -0.01), ("JobFailed", "retry_count", -1),
        ("JobQueued", "queue_position", -1), ("AuditRecord", "before", "{not json"),
        ("AuditRecord", "after", "NaN"), ("AuditRecord", "after", ""), ("AuditRecord", "before", 5),
    ],
)
def test_domain_rules(event_type: str, field: str, value: object):
    error = rejected(example(event_type, **{field: value}))
    assert error.field == field
    assert error.reason


@pytest.mark.parametrize(("field", "value"), [("priority", 0), ("priority", 10), ("estimated_cost_usd", 0)])
def test_domain_bounds_are_inclusive(field: str, value: object):
    parse_event(data=example("JobSubmitted", **{field: value}), now=NOW)


def test_audit_before_after_accept_any_json_text():
    event = parse_event(data=example("AuditRecord", before="null", after="[1, 2]"), now=NOW)
    assert (event.before, event.after) == ("null", "[1, 2]")


def test_status_change_must_change_status():
    error = rejected(example("JobStatusChanged", previous_status="RUNNING", new_status="RUNNING"))
    assert error.field == "new_status"
    assert "previous_status" in error.reason


def test_queue_position_may_be_null():
    assert parse_event(data=example("JobQueued", queue_position=None), now=NOW).queue_position is None


# -- batches ---------------------------------------------------------------------------------
def test_single_object_gives_one_event():
    events = parse_events(data=example("JobQueued"), now=NOW)
    assert len(events) == 1 and events[0].event_type == "JobQueued"


def test_batch_of_every_type():
    events = parse_events(data=[example(t) for t in EXAMPLES], now=NOW)
    assert [e.event_type for e in events] == list(EXAMPLES)


def test_batch_is_all_or_nothing_and_reports_the_index():
    batch = [example("JobQueued"), example("JobSubmitted"), example("JobFailed", retriable="no"), {"x": 1}]
    with pytest.raises(EventValidationError) as info:
        parse_events(data=batch, now=NOW)
    assert (info.value.index, info.value.field) == (2, "retriable")
    assert info.value.to_dict()["index"] == 2


def test_batch_item_that_is_not_an_object():
    with pytest.raises(EventValidationError) as info:
        parse_events(data=[example("JobQueued"), "JobQueued"], now=NOW)
    assert (info.value.index, info.value.field, info.value.reason) == (1, "", "an event must be a JSON object")


@pytest.mark.parametrize("data", [[], "events", None, 1])
def test_batch_body_must_be_object_or_non_empty_array(data: object):
    with pytest.raises(EventValidationError) as info:
        parse_events(data=data, now=NOW)
    assert info.value.field == "" and info.value.index is None


def test_batch_size_limit():
    assert len(parse_events(data=[example("JobQueued")] * MAX_BATCH_SIZE, now=NOW)) == MAX_BATCH_SIZE
    with pytest.raises(EventValidationError) as info:
        parse_events(data=[example("JobQueued")] * (MAX_BATCH_SIZE + 1), now=NOW)
    assert info.value.field == ""
    assert str(MAX_BATCH_SIZE) in info.value.reason


def test_batch_rejects_repeated_event_id():
    batch = [example("JobQueued", event_id=EVENT_ID), example("JobQueued"), example("JobQueued", event_id=EVENT_ID.upper())]
    with pytest.raises(EventValidationError) as info:
        parse_events(data=batch, now=NOW)
    assert (info.value.index, info.value.field) == (2, "event_id")
    assert "index 0" in info.value.reason


# -- Avro double-check of records built by Python code ----------------------------------------
def _envelope(event_type: str) -> dict[str, Any]:
    return dict(event_id=EVENT_ID, event_type=event_type, timestamp=NOW, correlation_id="c", user_id=None,
                schema_version=1, job_id="job-1")


def test_check_avro_names_the_field():
    with pytest.raises(EventValidationError) as info:
        check_avro(event=JobQueued(**_envelope("JobQueued"), queue_name="q", queue_position=2**40))
    assert info.value.field == "queue_position"
    assert "Avro" in info.value.reason


def test_check_avro_names_the_nested_field():
    event = JobSubmitted(**_envelope("JobSubmitted"), tacc_system="frontera", estimated_cost_usd=1.0, priority=1,
                         job_type="t", resource_request=ResourceRequest(nodes=2**40, gpus=0, walltime="01:00:00"))
    with pytest.raises(EventValidationError) as info:
        check_avro(event=event)
    assert info.value.field == "resource_request.nodes"


def test_check_avro_accepts_valid_records():
    check_avro(event=JobQueued(**_envelope("JobQueued"), queue_name="q"))


# -- randomized mutations: rejected cleanly, or still encodable ------------------------------
_ODD_VALUES: list[object] = [
    None, True, False, 0, -1, 1, 2**31, -(2**31) - 1, 2**63, 1.5, -0.0, float("nan"), float("inf"), "", " ",
    "x", "RUNNING", "00:00:00", "\ud800", EVENT_ID, "2025-06-01T12:00:00Z", [], [1], {}, {"a": 1.0},
    {"nodes": 1, "gpus": 0, "walltime": "01:00:00"}, 1748780000123,
]


def _containers(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = [data]
    for value in data.values():
        if isinstance(value, dict):
            found.extend(_containers(value))
    return found


def _mutate(rng: random.Random, data: dict[str, Any]) -> None:
    target = rng.choice(_containers(data))
    action = rng.choice(("drop", "retype", "add", "swap"))
    if action == "drop" and target:
        del target[rng.choice(sorted(target))]
    elif action == "retype" and target:
        target[rng.choice(sorted(target))] = copy.deepcopy(rng.choice(_ODD_VALUES))
    elif action == "swap" and target:
        # a value that is valid somewhere else, in the wrong place
        donor = EXAMPLES[rng.choice(sorted(EXAMPLES))]
        target[rng.choice(sorted(target))] = copy.deepcopy(donor[rng.choice(sorted(donor))])
    else:
        target[rng.choice(("extra", "event_typ", "jobId", "__faust", "nodes", "job_id", "timestamp"))] = (
            copy.deepcopy(rng.choice(_ODD_VALUES)))


def test_random_mutations_are_rejected_cleanly_or_still_encodable():
    rng = random.Random(20250601)
    outcomes = {"rejected": 0, "accepted": 0}
    for _ in range(3000):
        data = example(rng.choice(sorted(EXAMPLES)))
        for _ in range(rng.randint(1, 3)):
            _mutate(rng, data)
        before = copy.deepcopy(data) if not _has_nan(data) else None
        try:
            event = parse_event(data=data, now=NOW)
        except EventValidationError as exc:
            outcomes["rejected"] += 1
            assert isinstance(exc.field, str) and exc.reason
            assert set(exc.to_dict()) == {"error", "field", "reason"}
            continue
        outcomes["accepted"] += 1
        if before is not None:
            assert data == before  # input not modified
        avro_roundtrip(event)
        as_json = event_to_json(event)
        json.dumps(as_json, allow_nan=False)
        assert event_to_json(parse_event(data=as_json, now=NOW)) == as_json
    assert outcomes["rejected"] > 1000 and outcomes["accepted"] > 50, outcomes


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


def test_publishing_refuses_a_timestamp_beyond_the_bounds_naming_the_field_and_the_bound():
    from datetime import datetime, timedelta, timezone

    from app.core.errors import EventValidationError
    from app.core.settings import Settings
    from app.core.validation import EventTimeBounds, parse_event

    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    bounds = EventTimeBounds.of(Settings())
    event = {"event_type": "JobQueued", "job_id": "j", "user_id": "u", "queue_name": "normal", "queue_position": 1}

    def at(moment: datetime) -> dict:
        return {**event, "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")}

    assert parse_event(data=at(now - timedelta(minutes=59)), now=now, bounds=bounds).timestamp < now
    assert parse_event(data=at(now + timedelta(minutes=4)), now=now, bounds=bounds)
    assert parse_event(data=event, now=now, bounds=bounds).timestamp == now  # filled in: now
    for moment, bound in ((now - timedelta(hours=2), "COSMIC_MAX_EVENT_LATENESS"),
                          (now + timedelta(minutes=10), "COSMIC_MAX_CLOCK_SKEW")):
        with pytest.raises(EventValidationError) as info:
            parse_event(data=at(moment), now=now, bounds=bounds)
        assert info.value.field == "timestamp" and bound in info.value.reason, info.value.reason
    # without bounds (stateless checks of stored events): only the broad range
    assert parse_event(data=at(now - timedelta(days=30)), now=now)
