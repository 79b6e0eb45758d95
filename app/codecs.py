"""The Confluent wire-format Avro codec (magic byte 0, 4-byte big-endian schema id, Avro binary).

One codec per topic, registered with Faust by name (``avro:<topic>``). Encoding takes a
Faust record's representation (whose ``__faust.ns`` is the Avro full name of its union
branch); decoding returns a dict carrying ``__faust.ns`` so Faust rebuilds the right class.
Schemas are parsed once (our union) or once per writer schema id (fetched from the registry
and cached); the registry client is python-schema-registry-client (sync client: one
blocking request per new schema id, done ahead of time by :func:`warm_up` in workers).
"""

from __future__ import annotations

import io
import struct
import uuid
from datetime import datetime
from typing import Any

import fastavro
import faust
from faust.serializers import codecs as faust_codecs
from schema_registry.client import SchemaRegistryClient
from schema_registry.client.schema import AvroSchema
from schema_registry.serializers.faust import Serializer as _FaustPayload

from app.errors import EventDecodeError, EventEncodeError, SchemaNotRegisteredError
from app.models import EVENT_CLASSES, EventBase, TOPIC_EVENTS
from app.schemas import subject_for, topic_schema
from app.settings import Settings

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
FAUST_META = "__faust"


class UnionAvroSchema(AvroSchema):
    """AvroSchema for a top-level union: the library's ``name`` assumes a record (dict)."""

    @property
    def name(self) -> str | None:
        if isinstance(self.schema, list):
            return "|".join(str(branch.get("name")) for branch in self.schema if isinstance(branch, dict))
        return super().name


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
        self.schema = UnionAvroSchema(topic_schema(topic))
        self.client = client
        self.auto_register = auto_register
        # Parsed once: fastavro re-parses a schema given as a plain list on every call,
        # which cost ~60 µs per event for the lifecycle union (see docs/benchmarks.md).
        self._parsed = fastavro.parse_schema(topic_schema(topic))
        self._writer_schemas: dict[int, Any] = {}  # schema id → parsed writer schema
        self._writer_id: int | None = None

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
            obj = obj.to_representation()
        try:
            name = obj[FAUST_META]["ns"]
        except (TypeError, KeyError) as exc:
            raise EventEncodeError(f"{self.topic} takes event records, got {type(obj).__name__}") from exc
        record = _FaustPayload.clean_payload({k: v for k, v in obj.items() if k != FAUST_META})
        # fastavro writes any string into a uuid field, which its reader then refuses: the
        # record would be undecodable for every consumer (found by tests/reliability fuzzing).
        event_id = record.get("event_id") if isinstance(record, dict) else None
        if isinstance(event_id, str):
            try:
                uuid.UUID(event_id)
            except ValueError:
                raise EventEncodeError(f"{name}: event_id {event_id[:100]!r} is not a UUID") from None
        schema_id = self.writer_schema_id()
        out = io.BytesIO()
        out.write(HEADER.pack(MAGIC_BYTE, schema_id))
        try:
            fastavro.schemaless_writer(out, self._parsed, (name, record))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # Overflow: > 64 bits
            raise EventEncodeError(f"{name} does not fit the {self.topic} schema: {exc}") from exc
        return out.getvalue()

    def _loads(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER.size or data[0] != MAGIC_BYTE:
            raise EventDecodeError(
                f"not Confluent-framed Avro ({len(data)} bytes, first byte {data[:1]!r})",
                reason="not-framed",
            )
        schema_id = HEADER.unpack_from(data)[1]
        writer = self._writer_schema(schema_id)
        try:
            decoded = fastavro.schemaless_reader(
                io.BytesIO(memoryview(data)[HEADER.size:]), writer, self._parsed, return_record_name=True
            )
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on bad bytes
            raise EventDecodeError(
                f"Avro body does not decode with schema {schema_id}: {exc!r}", reason="bad-avro",
                schema_id=schema_id,
            ) from exc
        if not (isinstance(decoded, tuple) and len(decoded) == 2):
            raise EventDecodeError(f"schema {schema_id} is not a union of event records", reason="bad-avro", schema_id=schema_id)
        name, record = decoded
        event_id = record.get("event_id")
        if isinstance(event_id, uuid.UUID):
            record["event_id"] = str(event_id)
        record[FAUST_META] = {"ns": name}
        return record

    def _writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id``, fetched from the registry once."""
        parsed = self._writer_schemas.get(schema_id)
        if parsed is None:
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
                parsed = fastavro.parse_schema(found.schema)
            except Exception as exc:  # noqa: BLE001
                raise EventDecodeError(f"schema {schema_id} is not valid Avro: {exc}", reason="bad-avro",
                                       schema_id=schema_id) from exc
            self._writer_schemas[schema_id] = parsed
        return parsed

    # -- helpers ---------------------------------------------------------------------------
    def encode(self, event: EventBase) -> bytes:
        """The event's bytes exactly as every ingest path produces them."""
        return self.dumps(event.to_representation())

    def decode(self, data: bytes) -> EventBase:
        """Bytes → the event record (raises EventDecodeError)."""
        record = self._loads(data)
        name = record[FAUST_META]["ns"].rsplit(".", 1)[-1]
        cls = EVENT_CLASSES.get(name)
        if cls is None or cls not in TOPIC_EVENTS[self.topic]:
            raise EventDecodeError(f"{name} is not an event of {self.topic}", reason="bad-avro")
        return cls.from_data(record, preferred_type=cls)


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


def utc_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
