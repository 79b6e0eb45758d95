"""Every faust.Record in app/core/models.py matches its Avro record in avro/*.avsc, and back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Dict, Optional

import pytest

from app.core.models import NAMESPACE, TOPIC_EVENTS, TOPIC_SCHEMA_FILES
from app.core.schemas import AVRO_DIR, topic_schema

PRIMITIVES = {"string": str, "int": int, "long": int, "double": float, "float": float, "boolean": bool}


def _faust_record_by_namespace() -> dict[str, type]:
    import faust

    from app.core import models

    found = {}
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, faust.Record) and not value.__is_abstract__:
            found[value._options.namespace] = value
    return found


def _expected_type(avro_type: Any, named: dict[str, Any]) -> Any:
    """The Python annotation a Faust field must have for ``avro_type``."""
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        assert len(branches) == 1 and "null" in avro_type, f"only [null, X] unions in records: {avro_type}"
        return Optional[_expected_type(branches[0], named)]
    if isinstance(avro_type, str):
        if avro_type in PRIMITIVES:
            return PRIMITIVES[avro_type]
        return _expected_type(named[avro_type], named)
    kind = avro_type["type"]
    if avro_type.get("logicalType") == "timestamp-millis":
        return datetime
    if avro_type.get("logicalType") == "uuid":
        return str
    if kind == "enum":
        named[avro_type["name"]] = avro_type
        return str
    if kind == "map":
        value_type = _expected_type(avro_type["values"], named)
        return Dict[str, value_type]  # type: ignore[valid-type]
    if kind == "record":
        named[avro_type["name"]] = avro_type
        return ("record", f"{NAMESPACE}.{avro_type['name']}")
    if kind in PRIMITIVES:
        return PRIMITIVES[kind]
    raise AssertionError(f"unsupported Avro type {avro_type}")


def _compare(record_schema: dict, cls: type, named: dict[str, Any], records: dict[str, type]) -> None:
    fields = cls._options.fields
    defaults = cls._options.defaults
    avro_names = [f["name"] for f in record_schema["fields"]]
    assert avro_names == list(fields), f"{cls.__name__}: field names/order differ from the .avsc"
    for field in record_schema["fields"]:
        name = field["name"]
        expected = _expected_type(field["type"], named)
        actual = fields[name]
        if isinstance(expected, tuple):  # nested record
            nested_cls = records[expected[1]]
            assert actual is nested_cls, f"{cls.__name__}.{name}: {actual} is not {nested_cls}"
            nested_schema = field["type"] if isinstance(field["type"], dict) else named[field["type"]]
            _compare(nested_schema, nested_cls, named, records)
        else:
            assert actual == expected, f"{cls.__name__}.{name}: Faust {actual} vs Avro {expected}"
        if "default" in field:
            assert name in defaults and defaults[name] == field["default"], f"{cls.__name__}.{name}: default differs"
        else:
            assert name not in defaults, f"{cls.__name__}.{name}: Faust has a default the .avsc lacks"


@pytest.mark.parametrize("topic", sorted(TOPIC_EVENTS))
def test_topic_union_matches_its_records(topic):
    union = topic_schema(topic)
    records = _faust_record_by_namespace()
    assert isinstance(union, list), "each topic's value schema is a union of event records"
    names = [f"{r['namespace']}.{r['name']}" for r in union]
    assert names == [cls._options.namespace for cls in TOPIC_EVENTS[topic]]
    named: dict[str, Any] = {}
    for record_schema, cls in zip(union, TOPIC_EVENTS[topic]):
        assert record_schema["namespace"] == NAMESPACE
        _compare(record_schema, cls, named, records)


def test_every_avsc_file_is_a_known_topic_schema():
    assert sorted(p.name for p in AVRO_DIR.glob("*.avsc")) == sorted(TOPIC_SCHEMA_FILES.values())


def test_every_event_carries_the_event_base_fields():
    base = ["event_id", "event_type", "timestamp", "correlation_id", "user_id", "schema_version"]
    for topic in TOPIC_EVENTS:
        for record in topic_schema(topic):
            assert [f["name"] for f in record["fields"][:6]] == base
            assert record["fields"][0]["type"] == {"type": "string", "logicalType": "uuid"}
            assert record["fields"][2]["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_the_sync_check_catches_a_drifted_record(monkeypatch):
    """Guard the guard: a schema with one more field must fail the comparison."""
    union = json.loads(json.dumps(topic_schema("job-lifecycle")))
    union[1]["fields"].append({"name": "surprise", "type": "string"})
    records = _faust_record_by_namespace()
    with pytest.raises(AssertionError, match="JobQueued"):
        _compare(union[1], TOPIC_EVENTS["job-lifecycle"][1], {}, records)
