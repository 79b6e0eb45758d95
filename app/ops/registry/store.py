"""Schema storage: a deterministic in-memory fold of a compacted Kafka topic.

Layers, from the bottom up:

* ``RecordLog`` -- where records live. ``KafkaLog`` is the real one (one
  partition, ``cleanup.policy=compact``); ``MemoryLog`` serves unit tests.
* ``RegistryState`` -- the fold. Every process applies every record with the
  same rule, so processes reading the same topic agree on every id and version.
* ``SchemaStore`` -- the operations the REST API needs (register, look up,
  delete, configure), each a check-then-append retried until it wins.

Records use Confluent's layout::

    {"keytype":"SCHEMA","subject":s,"version":v,"magic":1}
        -> {"subject":s,"version":v,"id":n,"schemaType":"AVRO","schema":...,"deleted":false}
    {"keytype":"CONFIG","subject":s|null,"magic":0} -> {"compatibilityLevel": ...}

and a hard delete is a tombstone (null value).

Concurrency between registry processes: every writer appends inside a Kafka
transaction with one shared ``transactional_id``; starting a producer fences
the previous one, so a write only commits if nobody else wrote since this
process caught up with the log (no lost-race record ever reaches the
compacted log, where it could shadow the winner). As a second line of
defence readers ignore any SCHEMA record whose version slot is taken, or whose
id/schema is bound to another schema/id, and writers verify after read-back
that their record won, retrying with a fresh id and version if not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from app.core.errors import RegistryError
from app.ops.registry import compat

log = logging.getLogger(__name__)

AVRO = "AVRO"
SUPPORTED_TYPES: tuple[str, ...] = (AVRO,)
MAX_ATTEMPTS = 30

Record = tuple[bytes, bytes | None]
RecordSink = Callable[[bytes, bytes | None, int], None]


# --------------------------------------------------------------------------- errors


class RegistryRefusal(Exception):
    """A request the registry refuses, carrying Confluent's error code and message."""

    def __init__(self, *, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def subject_not_found(subject: str) -> RegistryRefusal:
    return RegistryRefusal(error_code=40401, message=f"Subject '{subject}' not found.")


def version_not_found(version: int | str) -> RegistryRefusal:
    return RegistryRefusal(error_code=40402, message=f"Version {version} not found.")


def schema_not_found(schema_id: int | None = None) -> RegistryRefusal:
    text = "Schema not found" if schema_id is None else f"Schema {schema_id} not found"
    return RegistryRefusal(error_code=40403, message=text)


def invalid_schema(reason: str) -> RegistryRefusal:
    return RegistryRefusal(error_code=42201, message=f"Invalid schema: {reason}")


def invalid_version(version: object) -> RegistryRefusal:
    return RegistryRefusal(
        error_code=42202,
        message=(
            f"The specified version '{version}' is not a valid version id. "
            'Allowed values are between [1, 2^31-1] and the string "latest"'
        ),
    )


def invalid_level() -> RegistryRefusal:
    return RegistryRefusal(
        error_code=42203,
        message=(
            "Invalid compatibility level. Valid values are none, backward, forward, full, "
            "backward_transitive, forward_transitive, and full_transitive"
        ),
    )


def no_subject_level(subject: str) -> RegistryRefusal:
    return RegistryRefusal(
        error_code=40408, message=f"Subject '{subject}' does not have subject-level compatibility configured"
    )


def parse_version(raw: str) -> int | None:
    """``"latest"``/``"-1"`` -> None, ``"3"`` -> 3; anything else raises 42202."""
    if raw in ("latest", "-1"):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid_version(raw) from None
    if not 1 <= value <= 2**31 - 1:
        raise invalid_version(raw)
    return value


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class SchemaVersion:
    """One (subject, version) slot."""

    subject: str
    version: int
    id: int
    schema: str
    schema_type: str = AVRO
    deleted: bool = False


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def schema_key(*, subject: str, version: int) -> bytes:
    return _dumps({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})


def schema_value(*, entry: SchemaVersion) -> bytes:
    return _dumps(
        {
            "subject": entry.subject,
            "version": entry.version,
            "id": entry.id,
            "schemaType": entry.schema_type,
            "schema": entry.schema,
            "deleted": entry.deleted,
        }
    )


def config_key(*, subject: str | None) -> bytes:
    return _dumps({"keytype": "CONFIG", "subject": subject, "magic": 0})


def config_value(*, level: str) -> bytes:
    return _dumps({"compatibilityLevel": level})


# --------------------------------------------------------------------------- state


class RegistryState:
    """The registry as of some log offset; ``apply`` must be fed records in log order.

    The acceptance rule only looks at records still live in the log, so a
    fresh reader of a compacted topic reaches the same state.
    """

    def __init__(self) -> None:
        self.subjects: dict[str, dict[int, SchemaVersion]] = {}
        self.configs: dict[str | None, str] = {}
        self._schema_of_id: dict[int, tuple[str, str]] = {}
        self._id_of_schema: dict[tuple[str, str], int] = {}
        self._refs: dict[int, int] = {}
        self.max_id = 0
        self.ignored = 0

    # ---- folding

    def apply(self, key: bytes, value: bytes | None, offset: int) -> None:
        """Apply one record; malformed or losing records are ignored (and counted)."""
        try:
            k = json.loads(key)
            keytype = k.get("keytype")
            if keytype == "SCHEMA":
                self._apply_schema(k, value, offset)
            elif keytype == "CONFIG":
                self._apply_config(k, value)
            # NOOP, MODE, DELETE_SUBJECT, ... carry nothing this registry uses.
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            self.ignored += 1
            log.warning("ignoring malformed registry record at offset %s: %s", offset, exc)

    def _apply_schema(self, k: dict, value: bytes | None, offset: int) -> None:
        subject, version = k["subject"], k["version"]
        if not isinstance(subject, str) or not isinstance(version, int):
            raise ValueError("bad SCHEMA key")
        slots = self.subjects.get(subject, {})
        if value is None:
            old = slots.pop(version, None)
            if old is not None:
                self._unref(old)
            if not slots:
                self.subjects.pop(subject, None)
            return
        v = json.loads(value)
        schema_type = v.get("schemaType") or AVRO
        entry = SchemaVersion(
            subject=subject,
            version=version,
            id=int(v["id"]),
            schema=compat.canonicalize(text=v["schema"]) if schema_type == AVRO else v["schema"],
            schema_type=schema_type,
            deleted=bool(v.get("deleted", False)),
        )
        if v.get("subject", subject) != subject or v.get("version", version) != version or entry.id < 1:
            raise ValueError("SCHEMA value does not match its key")
        ident = (entry.schema_type, entry.schema)
        current = slots.get(version)
        if current is not None:
            if current.id == entry.id and (current.schema_type, current.schema) == ident:
                slots[version] = entry  # soft delete / undelete of the same registration
            else:
                self._lost(offset, f"{subject} v{version} already holds id {current.id}")
            return
        bound = self._schema_of_id.get(entry.id)
        if bound is not None and bound != ident:
            self._lost(offset, f"id {entry.id} is bound to another schema")
            return
        other_id = self._id_of_schema.get(ident)
        if other_id is not None and other_id != entry.id:
            self._lost(offset, f"schema already has id {other_id}")
            return
        self.subjects.setdefault(subject, slots)[version] = entry
        self._schema_of_id[entry.id] = ident
        self._id_of_schema[ident] = entry.id
        self._refs[entry.id] = self._refs.get(entry.id, 0) + 1
        self.max_id = max(self.max_id, entry.id)

    def _lost(self, offset: int, why: str) -> None:
        self.ignored += 1
        log.info("ignoring SCHEMA record at offset %s that lost a race: %s", offset, why)

    def _unref(self, entry: SchemaVersion) -> None:
        left = self._refs.get(entry.id, 0) - 1
        if left > 0:
            self._refs[entry.id] = left
            return
        self._refs.pop(entry.id, None)
        ident = self._schema_of_id.pop(entry.id, None)
        if ident is not None:
            self._id_of_schema.pop(ident, None)

    def _apply_config(self, k: dict, value: bytes | None) -> None:
        subject = k.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise ValueError("bad CONFIG key")
        if value is None:
            self.configs.pop(subject, None)
            return
        level = json.loads(value).get("compatibilityLevel")
        self.configs[subject] = compat.normalize_level(level=level)

    # ---- queries

    def subject_names(self, *, deleted: bool = False) -> list[str]:
        return sorted(s for s, slots in self.subjects.items() if deleted or any(not e.deleted for e in slots.values()))

    def entries(self, *, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        """Versions of ``subject`` in order; 40401 if it has none (visible)."""
        slots = self.subjects.get(subject, {})
        found = [slots[v] for v in sorted(slots) if deleted or not slots[v].deleted]
        if not found:
            raise subject_not_found(subject)
        return found

    def entry(self, *, subject: str, version: int | None, deleted: bool = False) -> SchemaVersion:
        """One version (None = latest); 40401 / 40402 when missing."""
        found = self.entries(subject=subject, deleted=deleted)
        if version is None:
            return found[-1]
        for e in found:
            if e.version == version:
                return e
        raise version_not_found(version)

    def schema_by_id(self, *, schema_id: int) -> tuple[str, str]:
        """(schemaType, schema) bound to ``schema_id``; 40403 when unknown."""
        ident = self._schema_of_id.get(schema_id)
        if ident is None:
            raise schema_not_found(schema_id)
        return ident

    def id_of(self, *, schema_type: str, schema: str) -> int | None:
        return self._id_of_schema.get((schema_type, schema))

    def usages(self, *, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        return [
            e
            for s in sorted(self.subjects)
            for e in sorted(self.subjects[s].values(), key=lambda x: x.version)
            if e.id == schema_id and (deleted or not e.deleted)
        ]

    def lookup(self, *, subject: str, schema_type: str, schema: str, deleted: bool = False) -> SchemaVersion:
        """The version of ``subject`` holding ``schema``; 40401 / 40403 when missing."""
        found = self.entries(subject=subject, deleted=deleted)
        for e in found:
            if (e.schema_type, e.schema) == (schema_type, schema):
                return e
        raise schema_not_found()

    def global_level(self) -> str:
        return self.configs.get(None, compat.DEFAULT_LEVEL)

    def level(self, *, subject: str) -> str:
        return self.configs.get(subject) or self.global_level()


# --------------------------------------------------------------------------- logs


class WriteConflict(Exception):
    """Another writer took over the log; the operation must be re-planned."""


class RecordLog(Protocol):
    """Ordered, durable record storage feeding a sink."""

    async def start(self, *, sink: RecordSink) -> None:
        """Replay the log into ``sink`` up to its current end, then keep tailing it."""

    async def stop(self) -> None:
        """Stop tailing and release connections."""

    async def barrier(self) -> None:
        """Become the only writer and make sure the sink has seen everything committed."""

    async def append(self, *, records: Sequence[Record]) -> None:
        """Append ``records`` atomically; return once the sink has applied them.

        Raises WriteConflict if another writer intervened since ``barrier``.
        """


class MemoryLog:
    """An in-process RecordLog for tests; ``entries`` is the whole log."""

    def __init__(self) -> None:
        self.entries: list[Record] = []
        self._sink: RecordSink | None = None

    async def start(self, *, sink: RecordSink) -> None:
        self._sink = sink
        for offset, (key, value) in enumerate(self.entries):
            sink(key, value, offset)

    async def stop(self) -> None:
        self._sink = None

    async def barrier(self) -> None:
        return None

    async def append(self, *, records: Sequence[Record]) -> None:
        for key, value in records:
            self.entries.append((key, value))
            if self._sink is not None:
                self._sink(key, value, len(self.entries) - 1)


# --------------------------------------------------------------------------- store


@dataclass(frozen=True, kw_only=True)
class CompatCheck:
    """Outcome of a compatibility test (the ``/compatibility`` endpoint)."""

    is_compatible: bool
    messages: tuple[str, ...] = ()


@dataclass(kw_only=True)
class SchemaStore:
    """Registry operations over a RecordLog. Reads are served from memory."""

    log: RecordLog
    state: RegistryState = field(default_factory=RegistryState)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _started: bool = field(default=False, init=False)

    async def start(self) -> None:
        await self.log.start(sink=self.state.apply)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.log.stop()

    # ---- schema text

    @staticmethod
    def prepare(*, schema: object, schema_type: str | None) -> tuple[str, str]:
        """Validate a request's schema; return (schemaType, canonical text) or raise 42201."""
        kind = (schema_type or AVRO).upper()
        if kind not in SUPPORTED_TYPES:
            raise invalid_schema(f"unsupported schema type '{schema_type}'")
        if not isinstance(schema, str):
            raise invalid_schema("the 'schema' field must be a string holding the schema JSON")
        try:
            return kind, compat.canonicalize(text=schema)
        except compat.InvalidSchema as exc:
            raise invalid_schema(str(exc)) from None

    # ---- writes

    async def register(self, *, subject: str, schema: object, schema_type: str | None = None) -> int:
        """Register ``schema`` under ``subject`` and return its id (existing one if already there)."""
        kind, text = self.prepare(schema=schema, schema_type=schema_type)

        def plan() -> tuple[list[Record], SchemaVersion | int]:
            st = self.state
            slots = st.subjects.get(subject, {})
            for e in sorted(slots.values(), key=lambda x: x.version):
                if not e.deleted and (e.schema_type, e.schema) == (kind, text):
                    return [], e.id
            live = [e for e in sorted(slots.values(), key=lambda x: x.version) if not e.deleted]
            result = compat.is_compatible(new=text, existing=[e.schema for e in live], level=st.level(subject=subject))
            if not result.is_compatible:
                raise RegistryRefusal(
                    error_code=409,
                    message=(
                        "Schema being registered is incompatible with an earlier schema for subject "
                        f"\"{subject}\", details: [{', '.join(result.messages)}]"
                    ),
                )
            schema_id = st.id_of(schema_type=kind, schema=text) or st.max_id + 1
            version = max(slots, default=0) + 1
            entry = SchemaVersion(subject=subject, version=version, id=schema_id, schema=text, schema_type=kind)
            return [(schema_key(subject=subject, version=version), schema_value(entry=entry))], entry

        outcome = await self._write(plan)
        return outcome if isinstance(outcome, int) else outcome.id

    async def delete_subject(self, *, subject: str, permanent: bool = False) -> list[int]:
        """Soft-delete every version (or hard-delete a soft-deleted subject); return the versions."""

        def plan() -> tuple[list[Record], list[int]]:
            slots = self.state.subjects.get(subject, {})
            if not slots:
                raise subject_not_found(subject)
            live = [e for e in slots.values() if not e.deleted]
            if permanent:
                if live:
                    raise RegistryRefusal(
                        error_code=40405,
                        message=f"Subject '{subject}' was not deleted first before being permanently deleted",
                    )
                records: list[Record] = [(schema_key(subject=subject, version=v), None) for v in sorted(slots)]
                if subject in self.state.configs:
                    records.append((config_key(subject=subject), None))
                return records, sorted(slots)
            if not live:
                raise RegistryRefusal(
                    error_code=40404,
                    message=f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
                )
            live.sort(key=lambda e: e.version)
            return [_soft_deleted(e) for e in live], [e.version for e in live]

        return await self._write(plan)

    async def delete_version(self, *, subject: str, version: int | None, permanent: bool = False) -> int:
        """Soft-delete one version (None = latest), or hard-delete a soft-deleted one."""

        def plan() -> tuple[list[Record], int]:
            slots = self.state.subjects.get(subject, {})
            if not slots:
                raise subject_not_found(subject)
            if version is None:
                live = [v for v, e in slots.items() if not e.deleted]
                candidates = live if not permanent else list(slots)
                if not candidates:
                    raise version_not_found("latest")
                target = slots[max(candidates)]
            else:
                if version not in slots:
                    raise version_not_found(version)
                target = slots[version]
            if permanent:
                if not target.deleted:
                    raise RegistryRefusal(
                        error_code=40407,
                        message=(
                            f"Subject '{subject}' Version {target.version} was not deleted first "
                            "before being permanently deleted"
                        ),
                    )
                return [(schema_key(subject=subject, version=target.version), None)], target.version
            if target.deleted:
                raise RegistryRefusal(
                    error_code=40406,
                    message=(
                        f"Subject '{subject}' Version {target.version} was soft deleted."
                        "Set permanent=true to delete permanently"
                    ),
                )
            return [_soft_deleted(target)], target.version

        return await self._write(plan)

    async def set_level(self, *, subject: str | None, level: object) -> str:
        """Set the global (``subject=None``) or a subject's compatibility level; 42203 if invalid."""
        try:
            normalized = compat.normalize_level(level=level)  # type: ignore[arg-type]
        except ValueError:
            raise invalid_level() from None

        def plan() -> tuple[list[Record], str]:
            if self.state.configs.get(subject) == normalized:
                return [], normalized
            return [(config_key(subject=subject), config_value(level=normalized))], normalized

        return await self._write(plan)

    async def delete_level(self, *, subject: str | None) -> str:
        """Remove a level setting; return the level that was in force (40408 if none was set)."""

        def plan() -> tuple[list[Record], str]:
            if subject is None:
                old = self.state.global_level()
                return ([(config_key(subject=None), None)] if None in self.state.configs else []), old
            old_level = self.state.configs.get(subject)
            if old_level is None:
                raise no_subject_level(subject)
            return [(config_key(subject=subject), None)], old_level

        return await self._write(plan)

    async def _write(self, plan: Callable[[], tuple[list[Record], object]]):  # type: ignore[no-untyped-def]
        """Plan against fresh state, append, verify; retried on conflicts and lost races."""
        async with self._lock:
            for attempt in range(MAX_ATTEMPTS):
                await self.log.barrier()
                records, outcome = plan()
                if not records:
                    return outcome
                try:
                    await self.log.append(records=records)
                except WriteConflict:
                    await asyncio.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                    continue
                if self._landed(records):
                    return outcome
                log.info("registry write lost a race (attempt %s); retrying", attempt + 1)
            raise RegistryError(f"registry write did not win after {MAX_ATTEMPTS} attempts")

    def _landed(self, records: list[Record]) -> bool:
        """True if the state now reflects every record (the last writer's view of its own write)."""
        for key, value in records:
            k = json.loads(key)
            if k["keytype"] == "SCHEMA":
                slot = self.state.subjects.get(k["subject"], {}).get(k["version"])
                if value is None:
                    if slot is not None:
                        return False
                    continue
                v = json.loads(value)
                if slot is None or slot.id != v["id"] or slot.schema != v["schema"] or slot.deleted != v["deleted"]:
                    return False
            elif k["keytype"] == "CONFIG":
                want = None if value is None else json.loads(value)["compatibilityLevel"]
                if self.state.configs.get(k["subject"]) != want:
                    return False
        return True

    # ---- reads

    def check_compatibility(
        self, *, subject: str, version: int | None, schema: object, schema_type: str | None, all_versions: bool = False
    ) -> CompatCheck:
        """Test ``schema`` against one version of ``subject`` (or against the level's targets)."""
        kind, text = self.prepare(schema=schema, schema_type=schema_type)
        level = self.state.level(subject=subject)
        if all_versions:
            try:
                existing = [e.schema for e in self.state.entries(subject=subject)]
            except RegistryRefusal:
                existing = []
        else:
            existing = [self.state.entry(subject=subject, version=version).schema]
            level = level if level == "NONE" else level.removesuffix("_TRANSITIVE")
        result = compat.is_compatible(new=text, existing=existing, level=level)
        return CompatCheck(is_compatible=result.is_compatible, messages=result.messages)


def _soft_deleted(entry: SchemaVersion) -> Record:
    gone = SchemaVersion(
        subject=entry.subject,
        version=entry.version,
        id=entry.id,
        schema=entry.schema,
        schema_type=entry.schema_type,
        deleted=True,
    )
    return schema_key(subject=entry.subject, version=entry.version), schema_value(entry=gone)


# --------------------------------------------------------------------------- kafka


class KafkaLog:
    """RecordLog on a one-partition compacted topic, written in fenced transactions."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str = "_schemas",
        replication_factor: int = 1,
        transactional_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replication_factor = replication_factor
        self.transactional_id = transactional_id or f"cosmic-schema-registry-{topic}"
        self.timeout_s = timeout_s
        self._consumer = None  # aiokafka.AIOKafkaConsumer, created in start()
        self._producer = None  # aiokafka.AIOKafkaProducer, created lazily by barrier()
        self._tail: asyncio.Task[None] | None = None
        self._position = 0
        self._moved = asyncio.Condition()
        self._sink: RecordSink | None = None
        self._failure: BaseException | None = None

    @property
    def position(self) -> int:
        """The next offset the local reader will apply."""
        return self._position

    async def start(self, *, sink: RecordSink) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        self._sink = sink
        self._tp = TopicPartition(self.topic, 0)
        try:
            await self._ensure_topic()
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                fetch_max_wait_ms=100,
            )
            await self._consumer.start()
            self._consumer.assign([self._tp])
            await self._consumer.seek_to_beginning(self._tp)
        except KafkaError as exc:
            await self.stop()
            raise RegistryError(f"cannot open schema topic {self.topic!r} on {self.bootstrap}: {exc}") from exc
        self._tail = asyncio.create_task(self._tail_loop(), name=f"registry-tail-{self.topic}")
        try:
            await self._catch_up()
        except BaseException:
            await self.stop()
            raise
        log.info("schema topic %s replayed up to offset %s", self.topic, self._position)

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            await asyncio.gather(self._tail, return_exceptions=True)
            self._tail = None
        await self._drop_producer()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await consumer.stop()
            except Exception as exc:  # closing must not mask the caller's error
                log.warning("closing the schema topic consumer failed: %s", exc)

    async def barrier(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                transactional_id=self.transactional_id,
                enable_idempotence=True,
                acks="all",
            )
            try:
                async with asyncio.timeout(self.timeout_s):
                    await producer.start()  # InitProducerId: fences any other registry's producer
            except (KafkaError, TimeoutError) as exc:
                await _quietly_stop(producer)
                raise RegistryError(f"cannot start the schema topic producer: {exc!r}") from exc
            self._producer = producer
        await self._catch_up()

    async def append(self, *, records: Sequence[Record]) -> None:
        from aiokafka.errors import IllegalOperation, KafkaError

        producer = self._producer
        if producer is None:
            raise WriteConflict("no producer; call barrier() first")
        try:
            async with asyncio.timeout(self.timeout_s):
                await producer.begin_transaction()
                futures = [
                    await producer.send(self.topic, key=key, value=value, partition=0) for key, value in records
                ]
                await producer.commit_transaction()
                offsets = [(await f).offset for f in futures]
        except (KafkaError, IllegalOperation, TimeoutError) as exc:
            # Fenced by another registry (or the transaction failed): re-plan from scratch.
            log.debug("schema topic transaction failed (%r); re-planning", exc)
            await self._drop_producer()
            raise WriteConflict(str(exc)) from exc
        await self._wait_position(max(offsets) + 1)

    # ---- internals

    async def _ensure_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topic = NewTopic(
                name=self.topic,
                num_partitions=1,
                replication_factor=self.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            response = await admin.create_topics([topic], timeout_ms=int(self.timeout_s * 1000))
            for _name, code, *rest in response.topic_errors:
                if code == 0:
                    log.info("created schema topic %s", self.topic)
                elif code != TopicAlreadyExistsError.errno:
                    raise for_code(code)(rest[0] if rest else "")
            # A topic just created can take a moment to show up in the metadata.
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            while True:
                described = await admin.describe_topics([self.topic])
                partitions = described[0].get("partitions", []) if described else []
                if partitions or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
            if len(partitions) != 1:
                raise RegistryError(f"schema topic {self.topic!r} must have exactly 1 partition, has {len(partitions)}")
        finally:
            await admin.close()

    async def _tail_loop(self) -> None:
        assert self._consumer is not None and self._sink is not None
        backoff = 0.1
        while True:
            try:
                batch = await self._consumer.getmany(self._tp, timeout_ms=200)
                for message in batch.get(self._tp, []):
                    self._sink(message.key or b"", message.value, message.offset)
                position = await self._consumer.position(self._tp)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep tailing through broker hiccups
                log.warning("reading schema topic %s failed: %r", self.topic, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if position != self._position:
                async with self._moved:
                    self._position = position
                    self._moved.notify_all()

    async def _catch_up(self) -> None:
        """Wait until the reader has applied everything committed so far."""
        from aiokafka.errors import KafkaError

        assert self._consumer is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        except (KafkaError, TimeoutError) as exc:
            raise RegistryError(f"cannot read the end of schema topic {self.topic!r}: {exc!r}") from exc
        await self._wait_position(end)

    async def _wait_position(self, target: int) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._moved:
                    await self._moved.wait_for(lambda: self._position >= target)
        except TimeoutError:
            raise RegistryError(
                f"schema topic reader stuck at offset {self._position}, waiting for {target}"
            ) from None

    async def _drop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await _quietly_stop(producer)


async def _quietly_stop(producer: object) -> None:
    try:
        await producer.stop()  # type: ignore[attr-defined]
    except Exception as exc:  # a fenced producer may complain while closing
        log.debug("closing a schema topic producer: %r", exc)
