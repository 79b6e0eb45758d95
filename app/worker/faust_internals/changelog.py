"""A table write without Faust's per-write changelog machinery.

Faust's ``table[k] = v`` costs 165–280 µs on this machine kind (RocksDB itself about 10 µs):
the changelog record goes through ``Topic.send_soon``, Faust's ``ProducerBuffer`` and its
task, ``Topic.publish_message`` (whose ``maybe_start_producer`` yields to the event loop on
every record), and its acknowledgement through ``Collection._on_changelog_sent``, which
writes the partition's *persisted offset* to RocksDB once per record.

:func:`write_local` does what Faust's ``Table.__setitem__`` / ``__delitem__`` do to the store
(the same store write, the same expiry bookkeeping of windowed tables) and returns the
changelog record as bytes, serialized exactly as Faust serializes it. The batch
(:mod:`app.worker.batching`) hands those records to the producer with its other sends, awaits them
once, and then records each changelog partition's persisted offset once
(:func:`record_persisted`, the highest acknowledged offset), before Faust acks the batch. A
RocksDB store gets it with that store partition's next batch of puts (:class:`StoreWrites`),
one atomic write, instead of a put (a write to RocksDB's log) of its own per table partition
per batch — 3 % of a worker's CPU at 1,000 events/s (docs/profiles.md, 2026-12-08 second
part). The offset a store holds is then at most one batch behind: what its data holds is
always at least what its offset says (the offset of batch *k* is written with, or after, the
data of batch *k + 1*), so recovery may read a batch's records again (whole values, applied in
order: the same result), never skip one. A partition revoked from the worker forgets its
unwritten offset (:func:`forget_offsets`): its recovery writes its own.

:func:`send_records` hands a batch's changelog records to aiokafka as one record batch per
changelog partition instead of one ``send`` per record.

:func:`read_local` is the read for the same tables inside a batch: one RocksDB lookup in the
event's partition (a global table: where Faust's key index says, else in each partition) and
one JSON decode, where Faust's ``table[k]`` asks the store twice (``k in data``, then
``data[k]``), each time serializing the key through its serializer registry (about 8 % of a
worker's time, docs/profiles.md "2026-12-07").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.stores.base import SerializedStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from faust.utils import json
from rocksdict import WriteBatch


@dataclass(slots=True)
class ChangelogRecord:
    """One coalesced key's changelog record, ready for the producer."""

    table: Any
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None  # None: a deletion (tombstone)


def supports(table: Any) -> bool:
    """True if :func:`write_local` can write ``table`` (a partitioned changelog, no partitioner)."""
    return getattr(table, "changelog_topic", None) is not None and not getattr(table, "use_partitioner", False)


_PLAIN_JSON: dict[int, bool] = {}


def _plain_json(table: Any) -> bool:
    """True if ``table`` serializes keys and values as plain JSON (``json`` serializers, no
    value type): then a str key and its value are serialized by Faust's ``json.dumps``
    directly, the bytes its serializer registry would produce (orjson when installed), without
    the registry's per-call dispatch. ``tests/unit/test_batching.py`` checks both agree."""
    flag = _PLAIN_JSON.get(id(table))
    if flag is None:
        flag = _PLAIN_JSON[id(table)] = (table.key_serializer == "json" and table.value_serializer == "json"
                                         and getattr(table, "value_type", None) is None)
    return flag


#: What :func:`read_local` returns for a key its store does not hold.
ABSENT: Any = object()
#: What :func:`read_local` returns for a table it cannot read directly (use Faust's path).
UNSUPPORTED: Any = object()
_DIRECT_READ: dict[int, int] = {}
_NOT_DIRECT, _PARTITIONED, _GLOBAL = 0, 1, 2


def _direct_read(table: Any) -> int:
    """How :func:`read_local` reads ``table``: plain JSON on RocksDB, without a partitioner, and
    either partitioned like its source (a key lives in the store of the event's partition) or
    global (a key lives in the store of whichever partition wrote it)."""
    mode = _DIRECT_READ.get(id(table))
    if mode is None:
        direct = (_plain_json(table) and not getattr(table, "use_partitioner", False)
                  and isinstance(table.data, RocksDBStore))
        mode = _DIRECT_READ[id(table)] = (
            _NOT_DIRECT if not direct else _GLOBAL if getattr(table, "is_global", False) else _PARTITIONED)
    return mode


def read_local(*, table: Any, key: Any, partition: int) -> Any:
    """``table[key]`` as Faust decodes it (the JSON value; no model in it: these tables hold plain
    JSON), with one key encoding and one RocksDB lookup per database asked; :data:`ABSENT` if
    the store does not hold it, :data:`UNSUPPORTED` if ``table`` or ``key`` is not read this way.

    A partitioned table is read in the store of ``partition``. A global table is read as
    Faust's ``Store._get`` reads it: in the partition its key index names, else in every open
    partition until one holds the key (which the index then names)."""
    if not isinstance(key, str):
        return UNSUPPORTED
    mode = _direct_read(table)
    if mode == _PARTITIONED:
        raw = table.data._db_for_partition(partition).get(json.dumps(key))
    elif mode == _GLOBAL:
        raw = _global_get(table.data, json.dumps(key))
    else:
        return UNSUPPORTED
    return ABSENT if raw is None else json.loads(raw)


def _global_get(store: Any, raw_key: bytes) -> bytes | None:
    index = store._key_index
    known = index.get(raw_key)
    if known is not None:
        db = store._dbs.get(known)
        if db is not None:  # as Faust: the indexed partition alone is asked
            return db.get(raw_key)
    for partition, db in store._dbs.items():
        raw = db.get(raw_key)
        if raw is not None:
            index[raw_key] = partition
            return raw
    return None


#: Acknowledged changelog offsets not yet written to their RocksDB store:
#: ``(id(store), partition) -> (store, offset)`` (see the module docstring).
_UNWRITTEN_OFFSETS: dict[tuple[int, int], tuple[Any, int]] = {}


def forget_offsets(*, store: Any, partitions: set[int]) -> None:
    """Drop the unwritten persisted offsets of ``store``'s ``partitions`` (revoked)."""
    for partition in partitions:
        _UNWRITTEN_OFFSETS.pop((id(store), partition), None)


class StoreWrites:
    """The RocksDB puts of one flush, one ``WriteBatch`` per store and partition, written by
    :meth:`commit` (what Faust's changelog recovery does, ``Store.apply_changelog_batch``):
    one write to RocksDB's log per database instead of one per key."""

    def __init__(self) -> None:
        self._batches: dict[tuple[int, int], tuple[Any, int, Any]] = {}

    def put(self, *, store: Any, partition: int, key: bytes, value: bytes) -> None:
        slot = (id(store), partition)
        entry = self._batches.get(slot)
        if entry is None:
            entry = self._batches[slot] = (store, partition, WriteBatch(raw_mode=True))
            unwritten = _UNWRITTEN_OFFSETS.pop(slot, None)
            if unwritten is not None:  # the previous batch's offset, with this batch's data
                entry[2].put(store.offset_key, str(unwritten[1]).encode())
        entry[2].put(key, value)
        store._key_index[key] = partition  # as Store._set: where a later read finds the key

    def commit(self) -> None:
        """Write every batch to its database (synchronously, one after another)."""
        batches, self._batches = self._batches, {}
        for store, partition, batch in batches.values():
            store._db_for_partition(partition).write(batch)


def write_local(*, table: Any, key: Any, value: Any, deleted: bool, partition: int,
                writes: StoreWrites | None = None) -> ChangelogRecord | None:
    """Write ``key`` to ``table``'s store in the current event's partition (or delete it), and
    return its changelog record (None for the deletion of a key the store does not hold).

    A serialized store (RocksDB) gets the changelog record's own bytes — what Faust's recovery
    writes into it too — so a value is encoded once, not once for the store and once for the
    changelog. With ``writes``, a RocksDB put waits in it for :meth:`StoreWrites.commit`
    (deletions, rare, are written at once)."""
    store = table.data
    topic = table.changelog_topic
    plain = _plain_json(table) and isinstance(key, str)
    raw_key = json.dumps(key) if plain else topic.prepare_key(key, table.key_serializer)[0]
    serialized = isinstance(store, SerializedStore)
    if deleted:
        if not (store._contains(raw_key) if serialized else key in store):
            return None
        if serialized:
            store._del(raw_key)
        else:
            del store[key]
        table._maybe_del_key_ttl(key, partition)
        raw_value = None
    else:
        raw_value = json.dumps(value) if plain else topic.prepare_value(value, table.value_serializer)[0]
        if writes is not None and isinstance(store, RocksDBStore):
            writes.put(store=store, partition=partition, key=raw_key, value=raw_value)
        elif serialized:
            store._set(raw_key, raw_value)
        else:
            store[key] = value
        table._maybe_set_key_ttl(key, partition)
    return ChangelogRecord(table=table, topic=topic.get_topic_name(), partition=partition, key=raw_key,
                           value=raw_value)


def batch_client(producer: Any) -> Any:
    """The aiokafka producer under Faust's ``producer`` if it is running (for
    :func:`send_records`), else None (a stand-in producer, as in tests: send per record)."""
    if not getattr(producer, "started", False) or not hasattr(producer, "_ensure_producer"):
        return None
    client = producer._ensure_producer()
    return client if hasattr(client, "send_batch") else None


async def send_records(*, client: Any, records: list[ChangelogRecord]) -> list[tuple[list[ChangelogRecord], Any]]:
    """Hand ``records`` to ``client`` (:func:`batch_client`) as one Kafka record batch per
    changelog partition, in order (aiokafka's ``create_batch`` / ``send_batch``); returns each
    batch's records with the future of its acknowledgement (RecordMetadata: the batch's base
    offset). A batch that reaches the producer's batch size is sent (it is closed, so it goes
    out at once) and another one begun; a first record always fits.

    Why: a record handed to aiokafka's ``send`` costs about 16 µs of CPU here (a future, the
    partitioner, the accumulator), one appended to a batch about 4 µs (40,000 records of 200
    bytes over 10 partitions, two runs, 2026-12-07); a batch writes 4-6 changelog records per
    lifecycle event."""
    groups: dict[tuple[str, int], list[ChangelogRecord]] = {}
    for record in records:
        groups.setdefault((record.topic, record.partition), []).append(record)
    sent: list[tuple[list[ChangelogRecord], Any]] = []
    for (topic, partition), group in groups.items():
        builder, members = client.create_batch(), []
        for record in group:
            if builder.append(key=record.key, value=record.value, timestamp=None) is None:
                sent.append((members, await client.send_batch(builder, topic, partition=partition)))
                builder, members = client.create_batch(), []
                builder.append(key=record.key, value=record.value, timestamp=None)
            members.append(record)
        sent.append((members, await client.send_batch(builder, topic, partition=partition)))
    return sent


def record_persisted(acknowledged: dict[tuple[int, str, int], tuple[Any, int]]) -> None:
    """Record each changelog partition's highest acknowledged offset as the table's persisted
    offset (where recovery starts reading): ``(id(table), topic, partition) -> (table, offset)``;
    a RocksDB store's is written with its next batch of puts (see the module docstring)."""
    for (_, topic, partition), (table, offset) in acknowledged.items():
        store = table.data
        if isinstance(store, RocksDBStore):
            _UNWRITTEN_OFFSETS[(id(store), partition)] = (store, offset)
        else:
            store.set_persisted_offset(TP(topic, partition), offset)
