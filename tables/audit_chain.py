"""The audit hash chain's tables (all written while handling an ``audit-trail`` record of
partition *p*, and keyed by *p*, so each key's changelog partition is *p*):

* ``audit_chain``: blocks of chain entries. Entry *n* of partition *p* — {"seq", "event_id",
  "record" (the audit event's JSON), "prev_hash", "hash", "source_offset"} (see
  :mod:`app.core.audit_chain`) — is ``entries[n % BLOCK_SIZE]`` of the value under
  ``block_key(p, n)`` = ``"p:<first seq of the block>"``: {"offset": source offset of the
  block's newest entry, "entries": [...]}. A block only grows, entry after entry; its offset
  fences changelog recovery like every offset-fenced table's. Read and write entries with
  :func:`chain_entry` and :func:`store_entry`. The chain itself: ``cosmic audit verify``
  reads this table's changelog topic.
* ``audit_chain_heads``: ``"p"`` → {"offset", "seq", "hash"} of the newest entry of *p*:
  a pointer that saves looking for the end of the chain. The entries are the truth: the
  agent checks the head against them before use (see :mod:`agents.audit`).

Which event ids were chained, and at which offset, is read from the resource index
(:mod:`tables.audit_index`; see :mod:`agents.audit`).
"""

from __future__ import annotations

from typing import Any, Iterable

from app.core.audit_chain import BLOCK_SIZE, CHAIN_TABLE, block_key
from app.core.topic_specs import AUDIT_TRAIL, spec_by_name
from app.worker.batching import active_batch
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

AUDIT_PARTITIONS = spec_by_name(AUDIT_TRAIL).partitions

audit_chain = copartitioned_table(
    declare=fenced_table, name=CHAIN_TABLE, topic=AUDIT_TRAIL,
    help="partition:first seq -> a block of hash-chained audit entries",
)

audit_chain_heads = copartitioned_table(
    declare=fenced_table, name="audit_chain_heads", topic=AUDIT_TRAIL,
    help="partition -> {offset, seq, hash} of the newest chain entry",
)


def _batch_blocks() -> dict[str, list[dict[str, Any]]] | None:
    """The blocks this batch read or wrote, by key (None outside a batch): a block is decoded
    from the store once per batch, however many of its entries the batch reads or appends."""
    batch = active_batch()
    return None if batch is None else batch.memo.setdefault("audit-chain-blocks", {})


def _block_entries(partition: int, seq: int) -> list[dict[str, Any]]:
    key = block_key(partition, seq)
    blocks = _batch_blocks()
    if blocks is not None and key in blocks:
        return blocks[key]
    block = audit_chain.get(key)
    entries = block["entries"] if block else []
    if blocks is not None:
        blocks[key] = entries
    return entries


def chain_entry(partition: int, seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` of ``partition``'s chain (None: not there, or ``seq`` < 0)."""
    if seq < 0:
        return None
    entries = _block_entries(partition, seq)
    index = seq % BLOCK_SIZE
    return entries[index] if index < len(entries) else None


def chain_entries(partition: int, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The entries of ``partition`` at ``seqs`` that are there, reading each block once."""
    blocks: dict[int, list[dict[str, Any]]] = {}
    found = {}
    for seq in seqs:
        if seq < 0:
            continue
        first = seq - seq % BLOCK_SIZE
        if first not in blocks:
            blocks[first] = _block_entries(partition, seq)
        entries = blocks[first]
        if seq - first < len(entries):
            found[seq] = entries[seq - first]
    return found


def store_entry(partition: int, entry: dict[str, Any]) -> None:
    """Write ``entry`` (entry ``entry["seq"]`` of ``partition``) into its block: appended
    after the block's last entry, or in place of the one it holds at that seq (a replay
    re-asserting what it wrote writes the block again, unchanged)."""
    seq = entry["seq"]
    entries = _block_entries(partition, seq)
    index = seq % BLOCK_SIZE
    if index > len(entries):
        raise ValueError(f"audit chain {partition}: entry {seq} would leave a gap after entry "
                         f"{seq - index + len(entries) - 1}")
    entries = [*entries[:index], entry, *entries[index + 1:]]
    key = block_key(partition, seq)
    audit_chain[key] = {"offset": max(e["source_offset"] for e in entries), "entries": entries}
    blocks = _batch_blocks()
    if blocks is not None:
        blocks[key] = entries
