"""The audit hash chain's tables (all written while handling an ``audit-trail`` record of
partition *p*, and keyed by *p*, so each key's changelog partition is *p*):

* ``audit_chain``: ``"p:nnnnnnnnnnnn"`` → chain entry *n* of partition *p*:
  {"seq", "event_id", "record" (the audit event's JSON), "prev_hash", "hash",
  "source_offset"} (see :mod:`app.core.audit_chain`). The chain itself: ``cosmic audit verify``
  reads this table's changelog topic.
* ``audit_chain_heads``: ``"p"`` → {"offset", "seq", "hash"} of the newest entry of *p*:
  a pointer that saves looking for the end of the chain. The entries are the truth: the
  agent checks the head against them before use (see :mod:`agents.audit`).

Which event ids were chained, and at which offset, is read from the resource index
(:mod:`tables.audit_index`; see :mod:`agents.audit`).
"""

from __future__ import annotations

from typing import Any

from app.core.audit_chain import CHAIN_TABLE, entry_key
from app.core.topic_specs import AUDIT_TRAIL, spec_by_name
from app.worker.batching import coalescing_table
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

AUDIT_PARTITIONS = spec_by_name(AUDIT_TRAIL).partitions

audit_chain = copartitioned_table(
    declare=coalescing_table, name=CHAIN_TABLE, topic=AUDIT_TRAIL,
    help="partition:seq -> hash-chained audit entry",
)

audit_chain_heads = copartitioned_table(
    declare=fenced_table, name="audit_chain_heads", topic=AUDIT_TRAIL,
    help="partition -> {offset, seq, hash} of the newest chain entry",
)


def chain_entry(partition: int, seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` of ``partition``'s chain (None: not there, or ``seq`` < 0)."""
    return audit_chain.get(entry_key(partition, seq)) if seq >= 0 else None
