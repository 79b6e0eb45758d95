"""Untrusted JSON → event records, or an :class:`~app.core.errors.EventValidationError` naming the field.

Backs ``POST /api/events``, ``cosmic send`` and the Python publisher. The rules are driven by
the Faust records of :mod:`app.core.models` (field names, types, defaults) plus the Avro schemas in
``avro/`` (enum symbols, read lazily on first use); every record that passes is finally checked
against its topic's Avro union with fastavro, so whatever passes here can be encoded.

Decisions worth knowing:

* ``event_id``, ``timestamp``, ``correlation_id`` and ``schema_version`` are filled in only
  when *absent*; an explicit ``null`` is rejected (omit the field to have it generated).
* ``event_id`` must be a hyphenated 8-4-4-4-12 UUID (any case, stored lower-case); the nil
  UUID is rejected, since consumers dedupe on it. A batch may not repeat an ``event_id``.
* ``timestamp``: ISO 8601 date *and* time (``T`` or space, optional fraction, ``Z`` or an
  offset; naive means UTC) or integer epoch milliseconds; stored as aware UTC truncated to ms.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import faust
from fastavro import parse_schema
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate as avro_validate

from app.core.errors import EventValidationError
from app.core.models import EVENT_CLASSES, TOPIC_EVENTS, EventBase
from app.core.timeutil import as_utc, format_timestamp
from app.core.topic_specs import SOURCE_TOPICS

#: Most events one request (one JSON array) may carry.
MAX_BATCH_SIZE = 1000
#: Earliest accepted event timestamp.
MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: How far past ``now`` a timestamp may lie (brokers reject records further in the future).
MAX_FUTURE = timedelta(hours=1)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class EventTimeBounds:
    """How far an event's ``timestamp`` may lie from the server's clock when it is published:
    at most ``lateness`` in the past and ``skew`` in the future (COSMIC_MAX_EVENT_LATENESS,
    COSMIC_MAX_CLOCK_SKEW). Every publishing path checks it, so a partition's records are at
    most ``lateness + skew`` out of time order: what makes a replay window exact."""

    lateness: timedelta
    skew: timedelta

    @classmethod
    def of(cls, settings: Any) -> "EventTimeBounds":
        return cls(lateness=timedelta(seconds=settings.max_event_lateness),
                   skew=timedelta(seconds=settings.max_clock_skew))


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 3600 and seconds % 360 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 6 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SERVER_FILLED = ("event_id", "timestamp", "correlation_id", "schema_version")

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ISO_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
_WALLTIME_RE = re.compile(r"([0-9]{2,}):([0-9]{2}):([0-9]{2})")

#: String fields that identify something (keys, ids, names of actors): blank is refused.
_IDENTIFIER_FIELDS = frozenset(
    {"correlation_id", "user_id", "job_id", "resource_id", "component", "node", "notification_id",
     "source_event_id", "actor", "cancelled_by"}
)


def _fail(path: str, reason: str) -> typing.NoReturn:
    raise EventValidationError(field=path, reason=reason)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# -- per-field checks -------------------------------------------------------------------------
def _check_str(path: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(path, "string is not valid Unicode (unpaired surrogate)")
    if name in _IDENTIFIER_FIELDS and not value.strip():
        _fail(path, "must be a non-empty string")
    return value


def _check_int(path: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer, got {_json_type(value)}")
    if not INT_MIN <= value <= INT_MAX:
        _fail(path, f"integer out of range: must be between {INT_MIN} and {INT_MAX} (Avro int)")
    return int(value)


def _check_float(path: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, f"expected a number, got {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        _fail(path, "number out of range for a double")
    if not math.isfinite(number):
        _fail(path, "must be a finite number (NaN and Infinity are not allowed)")
    return number


def _check_bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_json_type(value)}")
    return value


def _check_float_map(path: str, value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        _fail(path, f"expected an object of numbers, got {_json_type(value)}")
    result: dict[str, float] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            _fail(path, f"keys must be strings, got {_json_type(key)}")
        _check_str(path, "", key)
        result[key] = _check_float(_join(path, key), item)
    return result


def _check_enum(path: str, value: object, enum: str) -> str:
    symbols = _enum_symbols()[enum]
    if not isinstance(value, str) or value not in symbols:
        got = repr(value) if isinstance(value, str) else _json_type(value)
        _fail(path, f"must be one of {', '.join(symbols)} ({enum}), got {got}")
    return value


def _check_event_id(path: str, value: object) -> str:
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        got = repr(value) if isinstance(value, str) else _json_type(value)
        _fail(path, "must be a UUID string like 5f1c2b0e-8c4a-4b55-9d7f-2a4f8f3b6a11 "
                    f"(omit it to have one generated), got {got}")
    canonical = str(uuid.UUID(value))
    if canonical == str(uuid.UUID(int=0)):
        _fail(path, "the nil UUID is not a valid event id")
    return canonical


def _check_schema_version(path: str, value: object) -> int:
    number = _check_int(path, value)
    if number < 1:
        _fail(path, f"must be an integer >= 1, got {number}")
    return number


def _timestamp_range(now: datetime) -> tuple[datetime, datetime]:
    return MIN_TIMESTAMP, now + MAX_FUTURE


def _range_reason(now: datetime) -> str:
    low, high = _timestamp_range(now)
    return (f"timestamp out of range: allowed from {format_timestamp(low)} "
            f"to {format_timestamp(high)} (at most {MAX_FUTURE.total_seconds() / 3600:g} h after "
            "the server's clock)")


def _check_timestamp(path: str, value: object, now: datetime) -> datetime:
    low, high = _timestamp_range(now)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        _fail(path, "expected an ISO 8601 string (e.g. 2024-05-01T12:00:00.000Z) or integer "
                    f"epoch milliseconds, got {_json_type(value)}")
    if isinstance(value, int):
        low_ms = (low - _EPOCH) // timedelta(milliseconds=1)
        high_ms = (high - _EPOCH) // timedelta(milliseconds=1)
        if not low_ms <= value <= high_ms:
            _fail(path, _range_reason(now))
        moment = _EPOCH + timedelta(milliseconds=value)
    else:
        if not _ISO_RE.fullmatch(value):
            _fail(path, "not an ISO 8601 date-time (expected e.g. 2024-05-01T12:00:00.000Z, "
                        f"2024-05-01T14:00:00+02:00 or epoch milliseconds), got {value!r}")
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            moment = parsed.astimezone(timezone.utc)
        except OverflowError:
            _fail(path, _range_reason(now))
        except ValueError as exc:
            _fail(path, f"not a valid date-time: {value!r} ({exc})")
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if not low <= moment <= high:
        _fail(path, _range_reason(now))
    return moment


# -- domain checks (class name, field) → reason or None ----------------------------------------
def _walltime(value: Any) -> str | None:
    match = _WALLTIME_RE.fullmatch(value)
    if not match:
        return f"must be HH:MM:SS (e.g. 48:00:00), got {value!r}"
    if int(match.group(2)) >= 60 or int(match.group(3)) >= 60:
        return f"minutes and seconds must be below 60, got {value!r}"
    return None


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda value: None if value is None or value >= low else f"must be >= {low}, got {value}"


def _json_text(value: Any) -> str | None:
    if value is None:
        return None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        json.loads(value, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        return f"must be a string containing valid JSON: {exc}"
    return None


_DOMAIN_CHECKS: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("ResourceRequest", "walltime"): _walltime,
    ("ResourceRequest", "nodes"): _at_least(1),
    ("ResourceRequest", "gpus"): _at_least(0),
    ("JobSubmitted", "priority"): lambda v: None if 0 <= v <= 10 else f"must be between 0 and 10, got {v}",
    ("JobSubmitted", "estimated_cost_usd"): _at_least(0),
    ("JobFailed", "retry_count"): _at_least(0),
    ("JobQueued", "queue_position"): _at_least(0),
    ("AuditRecord", "before"): _json_text,
    ("AuditRecord", "after"): _json_text,
}


# -- schema-derived field tables (built lazily, once) ------------------------------------------
@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # str | int | float | bool | datetime | enum | record | float_map
    optional: bool
    has_default: bool
    default: Any = None
    enum: str | None = None
    record: type[faust.Record] | None = None


@functools.cache
def _enum_symbols() -> dict[str, tuple[str, ...]]:
    from app.core.schemas import enum_symbols

    return enum_symbols()


@functools.cache
def _topic_of_class(cls: type) -> str | None:
    for topic, classes in TOPIC_EVENTS.items():
        if cls in classes:
            return topic
    return None


@functools.cache
def _parsed_topic_schema(topic: str) -> Any:
    from app.core.schemas import topic_schema

    return parse_schema(copy.deepcopy(topic_schema(topic)))


@functools.cache
def _avro_field_enums(record_name: str) -> dict[str, str]:
    """Field → enum name, for the fields of Avro record ``record_name`` whose type is an enum."""
    from app.core.schemas import topic_schema

    enums = _enum_symbols()
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                for fld in node["fields"]:
                    ftype = fld["type"]
                    if node["name"] == record_name:
                        name = ftype.get("name") if isinstance(ftype, dict) and ftype.get("type") == "enum" else ftype
                        if isinstance(name, str) and name.rsplit(".", 1)[-1] in enums:
                            found[fld["name"]] = name.rsplit(".", 1)[-1]
                    walk(ftype)

    for topic in TOPIC_EVENTS:
        walk(topic_schema(topic))
    return found


@functools.cache
def _fields_of(cls: type[faust.Record]) -> tuple[_Field, ...]:
    """The validation table of a Faust record class, in declaration order."""
    options = cls._options  # type: ignore[attr-defined]
    enums = _avro_field_enums(cls.__name__)
    fields: list[_Field] = []
    for name, annotation in options.fields.items():
        optional = False
        if typing.get_origin(annotation) is typing.Union:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                raise TypeError(f"{cls.__name__}.{name}: unsupported union {annotation}")
            annotation = args[0]
        record = None
        enum = enums.get(name)
        if enum is not None:
            kind = "enum"
        elif annotation in (str, int, float, bool, datetime):
            kind = annotation.__name__
        elif isinstance(annotation, type) and issubclass(annotation, faust.Record):
            kind, record = "record", annotation
        elif typing.get_origin(annotation) is dict and typing.get_args(annotation) == (str, float):
            kind = "float_map"
        else:
            raise TypeError(f"{cls.__name__}.{name}: unsupported field type {annotation}")
        has_default = name in options.defaults
        fields.append(_Field(name=name, kind=kind, optional=optional, has_default=has_default,
                             default=options.defaults.get(name), enum=enum, record=record))
    return tuple(fields)


# -- building records -------------------------------------------------------------------------
def _check_value(fld: _Field, path: str, value: object, *, owner: str, now: datetime) -> Any:
    if value is None:
        if fld.optional:
            return None
        _fail(path, "must not be null")
    if fld.kind == "str":
        result: Any = _check_str(path, fld.name, value)
    elif fld.kind == "int":
        result = _check_int(path, value)
    elif fld.kind == "float":
        result = _check_float(path, value)
    elif fld.kind == "bool":
        result = _check_bool(path, value)
    elif fld.kind == "datetime":
        result = _check_timestamp(path, value, now)
    elif fld.kind == "enum":
        assert fld.enum is not None
        result = _check_enum(path, value, fld.enum)
    elif fld.kind == "float_map":
        result = _check_float_map(path, value)
    else:
        assert fld.record is not None
        result = _build(fld.record, value, path=path, now=now)
    check = _DOMAIN_CHECKS.get((owner, fld.name))
    if check is not None:
        problem = check(result)
        if problem:
            _fail(path, problem)
    return result


def _build(cls: type[faust.Record], data: object, *, path: str, now: datetime,
           bounds: EventTimeBounds | None = None) -> faust.Record:
    """Validate ``data`` (an object) against ``cls`` field by field and construct the record."""
    if not isinstance(data, dict):
        _fail(path, f"expected an object, got {_json_type(data)}")
    fields = _fields_of(cls)
    known = {f.name for f in fields}
    for key in data:
        if key not in known:
            _fail(_join(path, str(key)), "unknown field")
    values: dict[str, Any] = {}
    for fld in fields:
        fpath = _join(path, fld.name)
        if issubclass(cls, EventBase) and fld.name in _SERVER_FILLED + ("event_type",):
            values[fld.name] = _base_field(fld.name, fpath, data, cls=cls, now=now, bounds=bounds)
            continue
        if fld.name not in data:
            if fld.has_default:
                values[fld.name] = copy.deepcopy(fld.default)
                continue
            _fail(fpath, "required field is missing")
        values[fld.name] = _check_value(fld, fpath, data[fld.name], owner=cls.__name__, now=now)
    return cls(**values)


def _base_field(name: str, path: str, data: dict, *, cls: type, now: datetime,
                bounds: EventTimeBounds | None = None) -> Any:
    """event_type (the class), and the server-filled envelope fields."""
    if name == "event_type":
        return cls.__name__
    if name not in data:
        if name == "timestamp":
            return now.replace(microsecond=now.microsecond // 1000 * 1000)
        if name == "schema_version":
            return 1
        return str(uuid.uuid4())
    value = data[name]
    if value is None:
        _fail(path, "must not be null (omit the field to have the server fill it in)")
    if name == "event_id":
        return _check_event_id(path, value)
    if name == "timestamp":
        moment = _check_timestamp(path, value, now)
        if bounds is not None:
            _check_event_time(path, moment, now=now, bounds=bounds)
        return moment
    if name == "schema_version":
        return _check_schema_version(path, value)
    return _check_str(path, name, value)


def _check_event_time(path: str, moment: datetime, *, now: datetime, bounds: EventTimeBounds) -> None:
    if moment < now - bounds.lateness:
        _fail(path, f"{format_timestamp(moment)} is {_duration(now - moment)} in the past: events may be at "
                    f"most {_duration(bounds.lateness)} late (COSMIC_MAX_EVENT_LATENESS = "
                    f"{bounds.lateness.total_seconds():g} s)")
    if moment > now + bounds.skew:
        _fail(path, f"{format_timestamp(moment)} is {_duration(moment - now)} ahead of the server's clock: "
                    f"at most {_duration(bounds.skew)} is allowed (COSMIC_MAX_CLOCK_SKEW = "
                    f"{bounds.skew.total_seconds():g} s)")


def _cross_checks(event: EventBase) -> None:
    if event.event_type == "JobStatusChanged":
        previous, new = event.previous_status, event.new_status  # type: ignore[attr-defined]
        if previous == new:
            _fail("new_status", f"must differ from previous_status (both are {new})")


# -- public API -------------------------------------------------------------------------------
def parse_event(*, data: object, now: datetime, index: int | None = None,
                bounds: EventTimeBounds | None = None) -> EventBase:
    """Validate one decoded-JSON event and build its record (raises EventValidationError).
    With ``bounds`` (every publishing path), its ``timestamp`` must lie within them of ``now``."""
    try:
        if not isinstance(data, dict):
            _fail("", "an event must be a JSON object")
        known = ", ".join(EVENT_CLASSES)
        if "event_type" not in data:
            _fail("event_type", f"required field is missing; one of: {known}")
        event_type = data["event_type"]
        if not isinstance(event_type, str) or event_type not in EVENT_CLASSES:
            got = repr(event_type) if isinstance(event_type, str) else _json_type(event_type)
            _fail("event_type", f"unknown event type {got}; one of: {known}")
        cls = EVENT_CLASSES[event_type]
        event = _build(cls, data, path="", now=as_utc(moment=now), bounds=bounds)
        assert isinstance(event, EventBase)
        _cross_checks(event)
        key_of(event)
        check_avro(event=event)
    except EventValidationError as exc:
        if index is not None and exc.index is None:
            raise EventValidationError(field=exc.field, reason=exc.reason, index=index) from None
        raise
    return event


def parse_events(*, data: object, now: datetime, bounds: EventTimeBounds | None = None) -> list[EventBase]:
    """One event object or a non-empty array of them → records; the first invalid item raises."""
    if isinstance(data, dict):
        return [parse_event(data=data, now=now, bounds=bounds)]
    if not isinstance(data, (list, tuple)):
        _fail("", f"expected a JSON object or a non-empty array of objects, got {_json_type(data)}")
    if not data:
        _fail("", "an array of events must not be empty")
    if len(data) > MAX_BATCH_SIZE:
        _fail("", f"too many events: at most {MAX_BATCH_SIZE} per request, got {len(data)}")
    events: list[EventBase] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        event = parse_event(data=item, now=now, index=index, bounds=bounds)
        if event.event_id in seen:
            raise EventValidationError(
                field="event_id", index=index,
                reason=f"duplicate event_id {event.event_id} (also at index {seen[event.event_id]})",
            )
        seen[event.event_id] = index
        events.append(event)
    return events


def topic_of(event: EventBase) -> str:
    """The topic (without prefix) that carries ``event``'s type."""
    topic = _topic_of_class(type(event))
    if topic is None:
        raise EventValidationError(field="event_type", reason=f"{type(event).__name__} belongs to no topic")
    return topic


@functools.cache
def _key_fields() -> dict[str, str]:
    return {spec.name: spec.key for spec in SOURCE_TOPICS}


def key_of(event: EventBase) -> str:
    """The Kafka key of ``event``: its topic's key field (job_id, resource_id, user_id, component)."""
    topic = topic_of(event)
    field = _key_fields()[topic]
    value = getattr(event, field, None)
    if not isinstance(value, str) or not value.strip():
        raise EventValidationError(
            field=field,
            reason=f"required for {type(event).__name__}: {field} is the Kafka key of topic {topic}",
        )
    return value


def _plain(value: Any, *, avro: bool) -> Any:
    if isinstance(value, faust.Record):
        return {f.name: _plain(getattr(value, f.name), avro=avro) for f in _fields_of(type(value))}
    if isinstance(value, datetime):
        return as_utc(moment=value) if avro else format_timestamp(value)
    if isinstance(value, dict):
        return {k: _plain(v, avro=avro) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, avro=avro) for v in value]
    return value


def event_to_json(event: EventBase) -> dict[str, Any]:
    """The event as plain JSON types (the input format of :func:`parse_event`), no Faust metadata."""
    return _plain(event, avro=False)


def check_avro(*, event: EventBase) -> None:
    """Raise EventValidationError unless ``event`` is valid for its topic's Avro union."""
    topic = topic_of(event)
    datum = _plain(event, avro=True)
    name = type(event)._options.namespace  # type: ignore[attr-defined]
    try:
        avro_validate((name, datum), _parsed_topic_schema(topic), raise_errors=True)
    except AvroValidationError as exc:
        errors = getattr(exc, "errors", ()) or ()
        field = _avro_error_field(type(event), errors[0].field if errors else "")
        detail = "; ".join(sorted({str(getattr(e, "schema", "")) for e in errors})) or str(exc)
        raise EventValidationError(field=field, reason=f"does not fit the Avro schema of {topic} "
                                                       f"(expected {detail})") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise EventValidationError(field="", reason=f"does not fit the Avro schema of {topic}: {exc}") from None


def _avro_error_field(cls: type[faust.Record], raw: str) -> str:
    """fastavro's ``ns.Record.field`` (or ``Field(ns.Record.field)``) → our dotted path, best effort."""
    raw = raw.strip()
    if raw.startswith("Field(") and raw.endswith(")"):
        raw = raw[len("Field("):-1]
    # which record class (top level or nested) is named, and where it sits under cls
    paths: dict[str, str] = {}

    def walk(record: type[faust.Record], prefix: str) -> None:
        paths[record._options.namespace] = prefix  # type: ignore[attr-defined]
        for fld in _fields_of(record):
            if fld.record is not None:
                walk(fld.record, _join(prefix, fld.name))

    walk(cls, "")
    for namespace in sorted(paths, key=len, reverse=True):
        if raw == namespace:
            return paths[namespace]
        if raw.startswith(namespace + "."):
            return _join(paths[namespace], raw[len(namespace) + 1:])
    return ""
