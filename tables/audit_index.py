"""Audit indexes, for ``GET /api/audit/resources/{id}`` and ``GET /api/audit/actors/{actor}``.

* ``audit_by_resource``: resource_id → {"offsets": {partition: last offset indexed},
  "records": [item, …]}. Keyed by resource_id, the ``audit-trail`` key, so a resource's
  index lives in the partition of its records and its owner answers for it.
* ``audit_by_actor``: ``"p/actor"`` → {"offset", "seqs": [seq, …]}: the chain positions of
  the actor's records in partition *p*, oldest first. An actor acts on resources of every
  partition, so the key carries the partition that writes it (Faust writes a table key to
  the changelog partition of the event being handled, and recovery puts it back there); an
  actor's records are the union over partitions. Only positions are kept: an actor writes
  in every batch, and each write rewrites the whole value to the changelog — 200 full items
  were about 66 KB per write, 200 positions are about 1.4 KB. The items are read back from
  the chain entries (:func:`actor_records`), which live in the same partition.

A resource's item is {"seq", "partition", "event_id", "action", "actor", "at", "outcome",
"resource_type", "resource_id", "source_event_id", "offset"}, oldest first (the actor view
builds the same items from the entries). Both indexes are *bounded* to the newest
:data:`RESOURCE_INDEX_LIMIT` items per resource and :data:`ACTOR_INDEX_LIMIT` positions per
actor and partition: each update rewrites the whole value to the changelog, so an unbounded
list would grow every write. The complete history is the chain itself (``audit_chain``),
which the items point into by (partition, seq). The offsets fence replays after a crash:
an item is appended once.
"""

from __future__ import annotations

from typing import Any

from app.core.topic_specs import AUDIT_TRAIL
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table
from tables.audit_chain import chain_entries

#: Newest index items kept per resource.
RESOURCE_INDEX_LIMIT = 1000
#: Newest index items kept per actor and audit-trail partition (so up to 5× this per actor).
ACTOR_INDEX_LIMIT = 200

audit_by_resource = copartitioned_table(
    declare=fenced_table, name="audit_by_resource", topic=AUDIT_TRAIL,
    help="resource_id -> newest audit records of the resource",
)

audit_by_actor = copartitioned_table(
    declare=fenced_table, name="audit_by_actor", topic=AUDIT_TRAIL,
    help="partition/actor -> newest audit records by the actor",
)


def item_of_entry(*, entry: dict[str, Any], partition: int) -> dict[str, Any]:
    """The index item of a chain entry (what :func:`index_item` kept for it)."""
    record = entry["record"]
    return {
        "seq": entry["seq"], "partition": partition, "event_id": entry["event_id"], "action": record["action"],
        "actor": record["actor"], "at": record["timestamp"], "outcome": record["outcome"],
        "resource_type": record["resource_type"], "resource_id": record["resource_id"],
        "source_event_id": record.get("source_event_id"), "offset": entry["source_offset"],
    }


def actor_records(*, partition: int, actor: str) -> list[dict[str, Any]]:
    """The actor's indexed records of ``partition``, oldest first: the index keeps only their
    chain positions, and each item is read back from its chain entry (same partition)."""
    indexed = audit_by_actor.get(f"{partition}/{actor}") or {}
    seqs = indexed.get("seqs", ())
    entries = chain_entries(partition, seqs)
    return [item_of_entry(entry=entries[seq], partition=partition) for seq in seqs if seq in entries]
