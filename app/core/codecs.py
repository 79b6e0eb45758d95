"""The Confluent wire-format Avro codec (magic byte 0, 4-byte big-endian schema id, Avro binary).

One codec per topic, registered with Faust by name (``avro:<topic>``). Encoding takes a
Faust record's representation (whose ``__faust.ns`` is the Avro full name of its union
branch); decoding returns a dict carrying ``__faust.ns`` so Faust rebuilds the right class.
Schemas are parsed once (our union) or once per writer schema id (fetched from the registry
and cached); the registry client is python-schema-registry-client (sync client: one
blocking request per new schema id, done ahead of time by :func:`warm_up` in workers).
"""

from __future__ import annotations

import functools
import io
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import faust
from faust.serializers import codecs as faust_codecs
from schema_registry.client import SchemaRegistryClient
from schema_registry.client.schema import AvroSchema
from schema_registry.serializers.faust import Serializer as _FaustPayload

from app.core.errors import EventDecodeError, EventEncodeError, SchemaNotRegisteredError
from app.core.models import EVENT_CLASSES, EventBase, TOPIC_EVENTS
from app.core.schemas import subject_for, topic_schema
from app.core.settings import Settings
from app.core.timeutil import format_epoch_ms
from app.core.validation import event_to_json
from app.worker.faust_internals.records import build_record, record_fields

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
FAUST_META = "__faust"
#: Keys of a parsed schema that never change what a record decodes to.
_SHAPE_IGNORED = frozenset({"doc", "default", "aliases", "order", "__fastavro_parsed", "__named_schemas"})
_LOGICAL_TYPE = frozenset({"logicalType"})
#: fastavro's origin of timestamp-millis values (its logical read: this plus the milliseconds).
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def _without(schema: Any, keys: frozenset[str]) -> Any:
    """``schema`` with the attributes ``keys`` removed at every depth."""
    if isinstance(schema, dict):
        return {k: _without(v, keys) for k, v in schema.items() if k not in keys}
    if isinstance(schema, list):
        return [_without(v, keys) for v in schema]
    return schema


def _top_level_logical_fields(schema: Any) -> dict[str, tuple[tuple[str, str], ...]] | None:
    """Branch full name → its ``(field, logical type)`` pairs, when every logical type of the
    union ``schema`` is a ``timestamp-millis`` or ``uuid`` on a top-level field (plain or
    nullable) and no field holds a union of records; otherwise None."""
    if not isinstance(schema, list):
        return None
    plans: dict[str, tuple[tuple[str, str], ...]] = {}
    for branch in schema:
        if not (isinstance(branch, dict) and branch.get("type") == "record"):
            return None
        fields: list[tuple[str, str]] = []
        for fld in branch["fields"]:
            ftype = fld["type"]
            options = ftype if isinstance(ftype, list) else [ftype]
            if isinstance(ftype, list) and sum(1 for o in options if o != "null") > 1:
                if any(isinstance(o, dict) or _has_logical(o) for o in options):
                    return None
                continue
            for option in options:
                if isinstance(option, dict) and "logicalType" in option:
                    if option["logicalType"] not in ("timestamp-millis", "uuid"):
                        return None
                    fields.append((fld["name"], option["logicalType"]))
                elif _has_logical(option):
                    return None
        plans[branch["name"]] = tuple(fields)
    return plans


def _has_logical(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "logicalType" in schema or any(_has_logical(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_logical(v) for v in schema)
    return False


@dataclass(frozen=True, kw_only=True)
class _WriterPlan:
    """How to read the records written with one schema id."""

    writer: Any  # parsed writer schema
    reader: Any  # parsed reader schema, or None when it decodes exactly as the writer's
    #: For :meth:`ConfluentAvroCodec.decode_json`: the writer schema without logical types and
    #: branch name → logical fields to convert, or None (decode fully, then convert).
    plain_writer: Any
    plain_fields: dict[str, tuple[tuple[str, str], ...]] | None


class UnionAvroSchema(AvroSchema):
    """AvroSchema for a top-level union: the library's ``name`` assumes a record (dict)."""

    @property
    def name(self) -> str | None:
        if isinstance(self.schema, list):
            return "|".join(str(branch.get("name")) for branch in self.schema if isinstance(branch, dict))
        return super().name


#: Avro's int and long ranges: fastavro writes an ``int`` of any size (a record other Avro
#: readers refuse) and refuses a long over 64 bits without naming the field.
AVRO_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_PRIMITIVES = frozenset({"null", "boolean", "float", "double", "bytes", "string"})


class FieldRangeError(EventEncodeError):
    """An integer field's value is outside its Avro type's range."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def integer_fields(schema: Any) -> dict[str, tuple[tuple[str, Any], ...]]:
    """For each record of ``schema`` (full name), its fields that are or hold Avro ints and
    longs: ``(field, kind)`` where kind is ``"int"``, ``"long"``, ``("record", full name)``,
    ``("array", kind)``, ``("map", kind)`` or ``("union", (kind, ...))``."""
    records: dict[str, tuple[tuple[str, Any], ...]] = {}

    def full_name(name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def kind_of(t: Any, namespace: str | None) -> Any:
        if isinstance(t, str):
            if t in AVRO_INT_RANGES:
                return t
            return None if t in _PRIMITIVES else ("record", full_name(t, namespace))
        if isinstance(t, list):
            kinds = tuple(k for k in (kind_of(branch, namespace) for branch in t) if k is not None)
            return None if not kinds else kinds[0] if len(kinds) == 1 else ("union", kinds)
        if isinstance(t, dict):
            typ = t.get("type")
            if typ == "record":
                return ("record", visit(t, namespace))
            if typ in ("array", "map"):
                inner = kind_of(t["items" if typ == "array" else "values"], namespace)
                return (typ, inner) if inner is not None else None
            if isinstance(typ, str) and typ in AVRO_INT_RANGES:
                return typ
            return None
        return None

    def visit(record: dict[str, Any], namespace: str | None) -> str:
        name = full_name(record["name"], record.get("namespace", namespace))
        inner_ns = name.rsplit(".", 1)[0] if "." in name else None
        records[name] = ()
        records[name] = tuple((f["name"], k) for f in record.get("fields", ())
                              if (k := kind_of(f["type"], inner_ns)) is not None)
        return name

    kind_of(schema, None)

    def holds_integers(kind: Any) -> bool:
        if isinstance(kind, str):
            return True
        tag, inner = kind
        if tag == "record":
            return bool(records.get(inner))
        return any(holds_integers(k) for k in inner) if tag == "union" else holds_integers(inner)

    # Drop references to named types without integers (enums, records of floats and strings),
    # until none is left: a record whose only integer holder was such a reference empties too.
    while True:
        pruned = {name: tuple(f for f in fields if holds_integers(f[1])) for name, fields in records.items()}
        if pruned == records:
            return records
        records = pruned


def check_integer_ranges(*, value: Any, kind: Any, path: str, records: dict[str, tuple[tuple[str, Any], ...]]) -> None:
    """Raise :class:`FieldRangeError` naming the field if an int or long in ``value`` is outside
    its Avro range (values of other types are left to the schema writer)."""
    if isinstance(kind, str):
        if type(value) is int:
            low, high = AVRO_INT_RANGES[kind]
            if not low <= value <= high:
                raise FieldRangeError(f"{path}: {value} is outside Avro {kind}'s range [{low}, {high}]", field=path)
        return
    tag, inner = kind
    if tag == "record":
        if isinstance(value, dict):
            for name, field_kind in records.get(inner, ()):
                item = value.get(name)
                if item is not None:
                    check_integer_ranges(value=item, kind=field_kind, path=f"{path}.{name}" if path else name,
                                         records=records)
    elif tag == "array":
        if isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                check_integer_ranges(value=item, kind=inner, path=f"{path}[{index}]", records=records)
    elif tag == "map":
        if isinstance(value, dict):
            for key, item in value.items():
                check_integer_ranges(value=item, kind=inner, path=f"{path}.{key}", records=records)
    elif tag == "union":
        for branch in inner:
            if (isinstance(branch, str) and type(value) is int) or (
                    not isinstance(branch, str) and branch[0] == "record" and isinstance(value, dict)):
                check_integer_ranges(value=value, kind=branch, path=path, records=records)


def codec_name(topic: str) -> str:
    return f"avro:{topic}"


class ConfluentAvroCodec(faust.Codec):
    """Encode/decode the events of one topic in Confluent's wire format."""

    def __init__(
        self, *, topic: str, topic_name: str, client: SchemaRegistryClient, auto_register: bool
    ) -> None:
        super().__init__()
        self.topic = topic
        self.subject = subject_for(topic_name=topic_name)
        self.client = client
        self.auto_register = auto_register
        self._writer_plans: dict[int, _WriterPlan] = {}  # schema id → how to read it
        self._branch_names = {cls._options.namespace: cls.__name__  # type: ignore[attr-defined]
                              for cls in TOPIC_EVENTS[topic]}
        self._writer_id: int | None = None

    # -- our schema, read from avro/ on first use (importing and declaring do no disk I/O) ---
    @functools.cached_property
    def schema(self) -> UnionAvroSchema:
        """Our union schema, as registered."""
        return UnionAvroSchema(topic_schema(self.topic))

    @functools.cached_property
    def _parsed(self) -> Any:
        # Parsed once: fastavro re-parses a schema given as a plain list on every call,
        # which cost ~60 µs per event for the lifecycle union (see docs/benchmarks.md).
        return fastavro.parse_schema(topic_schema(self.topic))

    @functools.cached_property
    def _integer_fields(self) -> Any:
        """Record full name → its integer fields, checked before fastavro writes a record."""
        return integer_fields(topic_schema(self.topic))

    # -- schema ids ------------------------------------------------------------------------
    def writer_schema_id(self) -> int:
        """Our schema's id under ``<topic>-value``: registered if allowed, else looked up."""
        if self._writer_id is None:
            try:
                if self.auto_register:
                    self._writer_id = self.client.register(self.subject, self.schema)
                else:
                    found = self.client.check_version(self.subject, self.schema)
                    if found is None or found.schema_id is None:
                        raise SchemaNotRegisteredError(
                            f"schema of {self.topic} is not registered under {self.subject} "
                            "and auto-registration is off (COSMIC_SCHEMA_AUTO_REGISTER=false)"
                        )
                    self._writer_id = found.schema_id
            except EventEncodeError:
                raise
            except Exception as exc:  # noqa: BLE001 - registry client errors are many
                raise EventEncodeError(
                    f"schema registry request for {self.subject} failed: {exc!r}"
                ) from exc
        return self._writer_id

    # -- Faust codec -----------------------------------------------------------------------
    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, EventBase):
            name, record = obj._options.namespace, record_fields(obj)
        else:
            try:
                name = obj[FAUST_META]["ns"]
            except (TypeError, KeyError) as exc:
                raise EventEncodeError(f"{self.topic} takes event records, got {type(obj).__name__}") from exc
            record = _FaustPayload.clean_payload({k: v for k, v in obj.items() if k != FAUST_META})
        # fastavro writes any string into a uuid field, which its reader then refuses: the
        # record would be undecodable for every consumer (found by tests/reliability fuzzing).
        event_id = record.get("event_id") if isinstance(record, dict) else None
        if isinstance(event_id, str) and not _CANONICAL_UUID(event_id):
            try:
                uuid.UUID(event_id)
            except ValueError:
                raise EventEncodeError(f"{name}: event_id {event_id[:100]!r} is not a UUID") from None
        if isinstance(record, dict):
            check_integer_ranges(value=record, kind=("record", name), path="", records=self._integer_fields)
        schema_id = self.writer_schema_id()
        out = io.BytesIO()
        out.write(HEADER.pack(MAGIC_BYTE, schema_id))
        try:
            fastavro.schemaless_writer(out, self._parsed, (name, record))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # Overflow: > 64 bits
            raise EventEncodeError(f"{name} does not fit the {self.topic} schema: {exc}") from exc
        return out.getvalue()

    @staticmethod
    def _schema_id(data: bytes) -> int:
        """The schema id of Confluent-framed bytes (EventDecodeError if not framed)."""
        if len(data) < HEADER.size or data[0] != MAGIC_BYTE:
            raise EventDecodeError(
                f"not Confluent-framed Avro ({len(data)} bytes, first byte {data[:1]!r})",
                reason="not-framed",
            )
        return HEADER.unpack_from(data)[1]

    @staticmethod
    def _read_body(data: bytes, *, schema_id: int, writer: Any, reader: Any) -> Any:
        """fastavro's reading of the Avro body after the header, errors as EventDecodeError."""
        try:
            return fastavro.schemaless_reader(
                io.BytesIO(memoryview(data)[HEADER.size:]), writer, reader, return_record_name=True
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on bad bytes
            raise EventDecodeError(
                f"Avro body does not decode with schema {schema_id}: {exc!r}", reason="bad-avro",
                schema_id=schema_id,
            ) from exc

    def _loads(self, data: bytes) -> dict[str, Any]:
        schema_id = self._schema_id(data)
        plan = self._writer_plan(schema_id)
        decoded = self._read_body(data, schema_id=schema_id, writer=plan.writer, reader=plan.reader)
        if not (isinstance(decoded, tuple) and len(decoded) == 2):
            raise EventDecodeError(f"schema {schema_id} is not a union of event records", reason="bad-avro", schema_id=schema_id)
        name, record = decoded
        event_id = record.get("event_id")
        if isinstance(event_id, uuid.UUID):
            record["event_id"] = str(event_id)
        record[FAUST_META] = {"ns": name}
        return record

    def _writer_plan(self, schema_id: int) -> _WriterPlan:
        """How to read ``schema_id``'s records; its schema is fetched from the registry once.

        When the writer schema decodes exactly as ours (same shape, docs and defaults aside),
        fastavro reads without schema resolution, which costs about four times the read."""
        plan = self._writer_plans.get(schema_id)
        if plan is None:
            try:
                found = self.client.get_by_id(schema_id)
            except Exception as exc:  # noqa: BLE001 - the client raises several kinds
                raise EventDecodeError(
                    f"schema registry lookup of id {schema_id} failed: {exc!r}", reason="registry-unavailable",
                    schema_id=schema_id,
                ) from exc
            if found is None:
                raise EventDecodeError(f"unknown schema id {schema_id}", reason="unknown-schema-id", schema_id=schema_id)
            try:
                writer = fastavro.parse_schema(found.schema)
            except Exception as exc:  # noqa: BLE001
                raise EventDecodeError(f"schema {schema_id} is not valid Avro: {exc}", reason="bad-avro",
                                       schema_id=schema_id) from exc
            # Same shape (docs, defaults and aliases aside): the bytes decode exactly as ours.
            same = _without(writer, _SHAPE_IGNORED) == _without(self._parsed, _SHAPE_IGNORED)
            plain_fields = _top_level_logical_fields(writer) if same else None
            plan = _WriterPlan(
                writer=writer, reader=None if same else self._parsed,
                plain_writer=(fastavro.parse_schema(_without(found.schema, _LOGICAL_TYPE))
                              if plain_fields is not None else None),
                plain_fields=plain_fields,
            )
            self._writer_plans[schema_id] = plan
        return plan

    # -- helpers ---------------------------------------------------------------------------
    def encode(self, event: EventBase) -> bytes:
        """The event's bytes exactly as every ingest path produces them."""
        return self._dumps(event)

    def decode(self, data: bytes) -> EventBase:
        """Bytes → the event record (raises EventDecodeError)."""
        record = self._loads(data)
        name = record[FAUST_META]["ns"].rsplit(".", 1)[-1]
        cls = EVENT_CLASSES.get(name)
        if cls is None or cls not in TOPIC_EVENTS[self.topic]:
            raise EventDecodeError(f"{name} is not an event of {self.topic}", reason="bad-avro")
        del record[FAUST_META]
        return build_record(cls, record)

    def decode_json(self, data: bytes) -> dict[str, Any]:
        """Bytes → the event as plain JSON types, equal to ``event_to_json(decode(data))``
        (raises EventDecodeError); the replay's fast path.

        For a writer schema that decodes as ours, fastavro reads with logical types off and the
        two kinds we use are converted here (timestamp-millis → ISO text, uuid → checked text),
        instead of building datetime, UUID and Faust record objects only to format them."""
        schema_id = self._schema_id(data)
        plan = self._writer_plan(schema_id)
        if plan.plain_fields is None:
            return event_to_json(self.decode(data))
        name, record = self._read_body(data, schema_id=schema_id, writer=plan.plain_writer, reader=None)
        return self._plain_to_json(name, record, schema_id=schema_id, plan=plan)

    def decode_both(self, data: bytes) -> tuple[EventBase, dict[str, Any]]:
        """Bytes → ``(decode(data), decode_json(data))`` from one Avro read (raises
        EventDecodeError): for an agent that handles the record and passes its JSON form on
        (the RabbitMQ copy), instead of reading the bytes twice."""
        schema_id = self._schema_id(data)
        plan = self._writer_plan(schema_id)
        if plan.plain_fields is None:
            event = self.decode(data)
            return event, event_to_json(event)
        name, plain = self._read_body(data, schema_id=schema_id, writer=plan.plain_writer, reader=None)
        fields = dict(plain)
        as_json = self._plain_to_json(name, plain, schema_id=schema_id, plan=plan)
        for fname, logical in plan.plain_fields[name]:
            value = fields[fname]
            if value is None:
                continue
            # as fastavro's logical read gives them (decode converts event_id to text)
            fields[fname] = _EPOCH + timedelta(milliseconds=value) if logical == "timestamp-millis" else as_json[fname]
        cls = EVENT_CLASSES.get(name.rsplit(".", 1)[-1])
        if cls is None or cls not in TOPIC_EVENTS[self.topic]:
            raise EventDecodeError(f"{name.rsplit('.', 1)[-1]} is not an event of {self.topic}", reason="bad-avro")
        return build_record(cls, fields), as_json

    def _plain_to_json(self, name: str, record: dict[str, Any], *, schema_id: int, plan: _WriterPlan) -> dict[str, Any]:
        """A record read with logical types off (``plan.plain_writer``) → its JSON form, in place."""
        if name not in self._branch_names:
            raise EventDecodeError(f"{name.rsplit('.', 1)[-1]} is not an event of {self.topic}", reason="bad-avro")
        for fname, logical in plan.plain_fields[name]:
            value = record[fname]
            if value is None:
                continue
            if logical == "timestamp-millis":
                try:
                    record[fname] = format_epoch_ms(value)
                except (OverflowError, ValueError, OSError) as exc:
                    raise EventDecodeError(
                        f"Avro body does not decode with schema {schema_id}: {fname} {value} is out of range",
                        reason="bad-avro", schema_id=schema_id,
                    ) from exc
            elif not _CANONICAL_UUID(value):
                try:
                    record[fname] = str(uuid.UUID(value))
                except ValueError as exc:
                    raise EventDecodeError(
                        f"Avro body does not decode with schema {schema_id}: {fname} {value[:100]!r} is not a UUID",
                        reason="bad-avro", schema_id=schema_id,
                    ) from exc
        return record


class Codecs:
    """The codecs of every topic for one settings object; registered with Faust by name."""

    def __init__(self, *, settings: Settings, client: SchemaRegistryClient | None = None) -> None:
        self.settings = settings
        self.client = client or SchemaRegistryClient(url=settings.schema_registry_url)
        self.by_topic = {
            topic: ConfluentAvroCodec(
                topic=topic, topic_name=settings.topic_prefix + topic, client=self.client,
                auto_register=settings.schema_auto_register,
            )
            for topic in TOPIC_EVENTS
        }

    def register_with_faust(self) -> None:
        for topic, codec in self.by_topic.items():
            faust_codecs.register(codec_name(topic), codec)

    def for_topic(self, topic: str) -> ConfluentAvroCodec:
        return self.by_topic[topic]

    def for_event(self, event: EventBase) -> ConfluentAvroCodec:
        for topic, classes in TOPIC_EVENTS.items():
            if type(event) in classes:
                return self.by_topic[topic]
        raise EventEncodeError(f"{type(event).__name__} belongs to no topic")

    def warm_up(self) -> dict[str, int]:
        """Register (or look up) every topic's schema now; topic → schema id."""
        return {topic: codec.writer_schema_id() for topic, codec in self.by_topic.items()}
