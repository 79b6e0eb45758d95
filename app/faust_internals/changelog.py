"""A table write without Faust's per-write changelog machinery.

Faust's ``table[k] = v`` costs 165–280 µs on this machine kind (RocksDB itself about 10 µs):
the changelog record goes through ``Topic.send_soon``, Faust's ``ProducerBuffer`` and its
task, ``Topic.publish_message`` (whose ``maybe_start_producer`` yields to the event loop on
every record), and its acknowledgement through ``Collection._on_changelog_sent``, which
writes the partition's *persisted offset* to RocksDB once per record.

:func:`write_local` does what Faust's ``Table.__setitem__`` / ``__delitem__`` do to the store
(the same store write, the same expiry bookkeeping of windowed tables) and returns the
changelog record as bytes, serialized exactly as Faust serializes it. The batch
(:mod:`app.batching`) hands those records to the producer with its other sends, awaits them
once, and then records each changelog partition's persisted offset once
(:func:`record_persisted`, the highest acknowledged offset), before Faust acks the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.stores.base import SerializedStore
from faust.types import TP


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


def write_local(*, table: Any, key: Any, value: Any, deleted: bool, partition: int) -> ChangelogRecord | None:
    """Write ``key`` to ``table``'s store in the current event's partition (or delete it), and
    return its changelog record (None for the deletion of a key the store does not hold).

    A serialized store (RocksDB) gets the changelog record's own bytes — what Faust's recovery
    writes into it too — so a value is encoded once, not once for the store and once for the
    changelog."""
    store = table.data
    topic = table.changelog_topic
    raw_key, _ = topic.prepare_key(key, table.key_serializer)
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
        raw_value, _ = topic.prepare_value(value, table.value_serializer)
        if serialized:
            store._set(raw_key, raw_value)
        else:
            store[key] = value
        table._maybe_set_key_ttl(key, partition)
    return ChangelogRecord(table=table, topic=topic.get_topic_name(), partition=partition, key=raw_key,
                           value=raw_value)


def record_persisted(acknowledged: dict[tuple[int, str, int], tuple[Any, int]]) -> None:
    """Record each changelog partition's highest acknowledged offset as the table's persisted
    offset (where recovery starts reading): ``(id(table), topic, partition) -> (table, offset)``."""
    for (_, topic, partition), (table, offset) in acknowledged.items():
        table.data.set_persisted_offset(TP(topic, partition), offset)
