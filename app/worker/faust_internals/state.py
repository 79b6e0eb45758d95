"""Reads of Faust state that Faust has no public API for, one function each with its reason."""

from __future__ import annotations

from typing import Any

from faust.types import EventT, TableT


def committed_offsets(consumer: Any) -> dict[Any, int]:
    """The offsets this consumer last committed, per partition (``Consumer._committed_offset``).

    Why: Faust's sensor hooks say a commit was initiated and completed, not whether it moved
    anything; health's commit age compares this before and after (a stalled consumer keeps
    "committing" the same offsets)."""
    return dict(getattr(consumer, "_committed_offset", None) or {})


def trust_unknown_changelog(table: TableT, *, source_topic: str, consumer: Any) -> None:
    """Skip Faust's changelog-partition check for ``source_topic`` while the consumer's metadata
    says the changelog has 0 partitions (``Table._verified_source_topics_for_partitions``).

    Why: Faust checks that a table's changelog has as many partitions as its source topic and
    skips the check while the consumer does not know the changelog (None). aiokafka's group
    metadata snapshot says 0 instead for a changelog Faust created moments before the group
    joined, and keeps saying so until its next metadata refresh (minutes), failing every write
    with PartitionsMismatch. 0 means unknown here as well: skip the check the same way."""
    verified = table._verified_source_topics_for_partitions  # type: ignore[attr-defined]
    if source_topic not in verified and consumer.topic_partitions(table.changelog_topic_name) == 0:
        verified.add(source_topic)


def stored_value(table: TableT, event: EventT) -> Any:
    """The value the local store holds for a changelog record's key, as stored (RocksDB: raw
    bytes of ``Store._db_for_partition``; memory store: the decoded value under
    ``Table._to_key``), or None.

    Why: changelog fencing (``app/worker/table_fencing.py``) compares an incoming changelog record with
    the local value while recovery applies a batch; ``table[key]`` would read through the
    current event's partition, which recovery does not set."""
    store = table.data  # type: ignore[attr-defined]
    db_for_partition = getattr(store, "_db_for_partition", None)
    if db_for_partition is not None:  # RocksDB: raw bytes, one database per partition
        return db_for_partition(event.message.partition).get(event.message.key)
    data = getattr(store, "data", None)  # memory store: decoded keys and values
    if data is None:
        return None
    return data.get(table._to_key(event.key))  # type: ignore[attr-defined]
