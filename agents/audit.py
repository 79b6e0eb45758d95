"""``record_audit_trail``: chain every audit record once, per partition, and index it.

Each record of ``audit-trail`` partition *p* (decoded to its JSON form — what the chain holds —
by :func:`app.worker.streams.process_events`; undecodable ones are dead-lettered there)
becomes the next entry of *p*'s hash chain (:mod:`app.core.audit_chain`): entry ``n``,
chained to entry ``n - 1``, stored in its block of ``audit_chain`` (:mod:`tables.audit_chain`:
a batch writes each block it extends once).
It is also appended to the resource index and the actor index (:mod:`tables.audit_index`).
A record whose event_id was already chained at another offset — the lifecycle agent
re-emits its audit records with the same ids after a crash — is a duplicate: dropped and
counted, never chained twice. The resource index is what knows: ``audit-trail`` is keyed by
resource, so every copy of a record reaches the partition and the index row that hold the
first one (the newest ``RESOURCE_INDEX_LIMIT`` items per resource; a separate table of
processed ids cost one more changelog record per audit record and is gone).

Crash atomicity
---------------
Per record the handler writes, with no ``await`` in between: the chain entry, the head
pointer, then the two index keys. In the worker's own store those
writes happen in one synchronous step, so a killed process keeps all of them or none. But
each write is also a record of a *different* changelog topic, and a worker that recovers
from the changelogs (new host, lost disk, rebalance) can see any subset of the writes of
the records after the last committed offset, which are then replayed. What bounds the
damage:

* Faust flushes the producer before it commits source offsets, so every write of a
  committed record is in its changelog;
* within ONE changelog partition records persist in order (the producer keeps one batch
  in flight per partition), all entries of partition *p* live in partition *p* of the
  ``audit_chain`` changelog, and a block's record holds every entry of the block up to its
  newest, so the surviving entries are always a gap-free prefix.

So the agent never trusts the head pointer alone; it derives the head from the entries
(:func:`chain_head`): it steps back while the entry the pointer names is missing (the
head's changelog record survived, the entry's did not) and forward while the next entry
exists and links to it (the entry survived, the head did not) — once per partition and batch
(:func:`_batch_heads`): the entries it chains afterwards are the head. Then:

1. A replayed offset at or below the head's ``source_offset`` was handled before the
   crash: its entry is found by offset (offsets grow with seq) and nothing is chained;
   the head pointer, processed id and indexes are rewritten if they lag. If no entry has
   that offset, it had been dead-lettered as a duplicate, and is again.
2. An offset above the head was not chained (the entries are a prefix). If the resource
   index says the event was chained at *this* offset, only the entry was lost: it is chained
   again, at the same seq with the same previous hash — so with the same hash, since the
   chain's input (records in offset order, the same dedupe decisions) is the same.
3. The indexes carry their own offset fences, so a replay appends an item once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.core.audit_chain import GENESIS_HASH, make_entry
from app.core.errors import DuplicateEvent
from app.core.topic_specs import AUDIT_TRAIL
from app.worker.batching import active_batch
from app.worker.main import app, settings
from app.worker.observability import IDEMPOTENCY_HITS as IDEMPOTENCY_HITS_METRIC, labelled
from app.worker.streams import Origin, process_events
from app.worker.topics import audit_trail_topic
from tables.audit_chain import audit_chain_heads, chain_entry, store_entry
from tables.audit_index import ACTOR_INDEX_LIMIT, RESOURCE_INDEX_LIMIT, audit_by_actor, audit_by_resource

logger = logging.getLogger(__name__)

#: Audit records recognised as already chained: "duplicate" (same event_id at another
#: offset) or "replay" (same offset again after a restart).
AUDIT_HITS: Counter[str] = Counter()


@dataclass(frozen=True)
class ChainHead:
    """The newest entry of a partition's chain (seq -1: empty chain)."""

    seq: int
    hash: str
    offset: int

    def pointer(self) -> dict[str, Any]:
        return {"offset": self.offset, "seq": self.seq, "hash": self.hash}


EMPTY_HEAD = ChainHead(seq=-1, hash=GENESIS_HASH, offset=-1)


def _head_of(entry: dict[str, Any] | None) -> ChainHead:
    if entry is None:
        return EMPTY_HEAD
    return ChainHead(seq=entry["seq"], hash=entry["hash"], offset=entry["source_offset"])


def chain_head(partition: int) -> ChainHead:
    """The newest entry of ``partition``'s chain, from the head pointer checked against the entries."""
    pointer = audit_chain_heads.get(str(partition))
    seq = pointer["seq"] if pointer else -1
    entry = chain_entry(partition, seq)
    while seq >= 0 and entry is None:  # the pointer survived a crash, its entry did not
        seq -= 1
        entry = chain_entry(partition, seq)
    head = _head_of(entry)
    while True:  # entries survived a crash, the pointer to them did not
        following = chain_entry(partition, head.seq + 1)
        if following is None or following.get("prev_hash") != head.hash:
            if following is not None:
                logger.error("audit chain %s: entry %s does not link to entry %s", partition,
                             head.seq + 1, head.seq)
            return head
        head = _head_of(following)


def entry_at_offset(partition: int, offset: int, head: ChainHead) -> dict[str, Any] | None:
    """The entry of ``partition`` chained from source ``offset`` (binary search; offsets grow with seq)."""
    low, high = 0, head.seq
    while low <= high:
        middle = (low + high) // 2
        entry = chain_entry(partition, middle)
        if entry is None:
            return None
        if entry["source_offset"] == offset:
            return entry
        if entry["source_offset"] < offset:
            low = middle + 1
        else:
            high = middle - 1
    return None


def _chained_offset(event_id: str, indexed: dict[str, Any] | None) -> int | None:
    """The audit-trail offset ``event_id`` was chained at, if its resource index (``indexed``,
    the value of ``audit_by_resource[resource_id]``) still has it."""
    for item in (indexed or {}).get("records", ()):
        if item["event_id"] == event_id:
            return item["offset"]
    return None


def _batch_heads() -> dict[int, ChainHead]:
    """The chain heads this batch derived or chained, per partition (empty outside a batch).

    The head is derived from the stored entries (:func:`chain_head`, three reads or more) once
    per partition and batch; afterwards it is the entry this agent chained last, set in the
    same synchronous step as the entry's write, so it always equals what :func:`chain_head`
    would derive from the batch's overlay (this agent is the partition's only writer)."""
    batch = active_batch()
    return {} if batch is None else batch.memo.setdefault("audit-chain-heads", {})


async def handle_audit_record(record: dict[str, Any], origin: Origin) -> None:
    """Chain and index one audit record, given in its JSON form (the agent decodes with
    ``as_json``: what is chained is that form, so no record object is built)."""
    partition, offset = origin.partition, origin.offset
    event_id, resource_id = record["event_id"], record["resource_id"]
    heads = _batch_heads()
    head = heads.get(partition) or chain_head(partition)
    heads[partition] = head
    by_resource = None
    if offset <= head.offset:
        # Handled before a restart: chained then, or dead-lettered as a duplicate then.
        entry = entry_at_offset(partition, offset, head)
        if entry is None:
            AUDIT_HITS["duplicate"] += 1
            labelled(IDEMPOTENCY_HITS_METRIC, "record_audit_trail").inc()
            raise DuplicateEvent(f"audit event {event_id} was already chained")
        AUDIT_HITS["replay"] += 1
        labelled(IDEMPOTENCY_HITS_METRIC, "record_audit_trail").inc()
        if entry["event_id"] != event_id:
            logger.error("audit chain %s: offset %s holds %s, replayed as %s", partition, offset,
                         entry["event_id"], event_id)
        # Re-assert what this record wrote: the local store can be ahead of the changelogs
        # after a SIGKILL (values are stored at once, changelog records sent later), and
        # only records after the last commit, i.e. replayed ones, can be affected.
        store_entry(partition, entry)
        audit_chain_heads[str(partition)] = head.pointer()
    else:
        by_resource = audit_by_resource.get(resource_id)
        chained_at = _chained_offset(event_id, by_resource)
        if chained_at is not None and chained_at != offset:
            AUDIT_HITS["duplicate"] += 1
            labelled(IDEMPOTENCY_HITS_METRIC, "record_audit_trail").inc()
            raise DuplicateEvent(f"audit event {event_id} was already chained (offset {chained_at})")
        entry = make_entry(seq=head.seq + 1, event_id=event_id, record=record, prev_hash=head.hash,
                           source_offset=offset)
        # Entry first, then what points at it (see the module docstring).
        store_entry(partition, entry)
        head = heads[partition] = _head_of(entry)
    if audit_chain_heads.get(str(partition)) != head.pointer():
        audit_chain_heads[str(partition)] = head.pointer()
    _index(record=record, entry=entry, partition=partition, offset=offset,
           by_resource=by_resource if by_resource is not None else audit_by_resource.get(resource_id))


def index_item(*, record: dict[str, Any], entry: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """What the indexes keep of one chained record (``record``: its JSON form)."""
    return {
        "seq": entry["seq"],
        "partition": partition,
        "event_id": record["event_id"],
        "action": record["action"],
        "actor": record["actor"],
        "at": entry["record"]["timestamp"],
        "outcome": record["outcome"],
        "resource_type": record["resource_type"],
        "resource_id": record["resource_id"],
        "source_event_id": record["source_event_id"],
        "offset": offset,
    }


def _index(*, record: dict[str, Any], entry: dict[str, Any], partition: int, offset: int,
           by_resource: dict[str, Any] | None) -> None:
    """Append the record to its resource's index (``by_resource``: that index's value as read
    before the record was chained) and to its actor's index."""
    item = index_item(record=record, entry=entry, partition=partition, offset=offset)
    # A replayed record (at or below the fence) writes the index value again, unchanged: the
    # local store can hold a value whose changelog record died with a killed worker, and only
    # records after the last commit — the replayed ones — can be affected (as in
    # agents/job_lifecycle.py). Without it, a worker rebuilt from the changelogs alone missed
    # index items the survivor had (the pipeline SIGKILL test compares both).
    by_resource = by_resource or {"offsets": {}, "records": []}
    if by_resource["offsets"].get(str(partition), -1) < offset:
        audit_by_resource[record["resource_id"]] = {
            "offsets": {**by_resource["offsets"], str(partition): offset},
            "records": (by_resource["records"] + [item])[-RESOURCE_INDEX_LIMIT:],
        }
    elif by_resource["records"]:
        audit_by_resource[record["resource_id"]] = by_resource  # replay: re-assert
    actor_key = f"{partition}/{record['actor']}"
    by_actor = audit_by_actor.get(actor_key) or {"offset": -1, "seqs": []}
    if by_actor["offset"] < offset:
        audit_by_actor[actor_key] = {"offset": offset, "seqs": (by_actor["seqs"] + [entry["seq"]])[-ACTOR_INDEX_LIMIT:]}
    elif by_actor["seqs"]:
        audit_by_actor[actor_key] = by_actor  # replay: re-assert


# State-changing agent: concurrency 1, so Faust never commits past an in-flight record and
# each partition's records are chained in offset order.
@app.agent(audit_trail_topic, concurrency=1)
async def record_audit_trail(stream):
    async for result in process_events(stream, topic=AUDIT_TRAIL, handler=handle_audit_record, as_json=True,
                                       max_wait_ms=settings.background_batch_max_wait_ms):
        yield result
