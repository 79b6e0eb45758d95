"""The audit hash chain's tables (all written while handling an ``audit-trail`` record of
partition *p*, and keyed by *p*, so each key's changelog partition is *p*):

* ``audit_chain``: ``"p:nnnnnnnnnnnn"`` → chain entry *n* of partition *p*:
  {"seq", "event_id", "record" (the audit event's JSON), "prev_hash", "hash",
  "source_offset"} (see :mod:`app.core.audit_chain`). The chain itself: ``cosmic audit verify``
  reads this table's changelog topic.
* ``audit_chain_heads``: ``"p"`` → {"offset", "seq", "hash"} of the newest entry of *p*:
  a pointer that saves looking for the end of the chain. The entries are the truth: the
  agent checks the head against them before use (see :mod:`agents.audit`).
* ``audit_processed``: audit event_id → 1 + the ``audit-trail`` offset it was chained at,
  windowed (one-day tumbling windows by event time, expiring
  after ``COSMIC_DEDUPE_WINDOW_HOURS``). A record with a known event_id at *another*
  offset is a duplicate; at the *same* offset it is this record replayed after a crash.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.core.audit_chain import CHAIN_TABLE, entry_key
from app.core.topic_specs import AUDIT_TRAIL, spec_by_name
from app.worker.batching import coalescing_table
from app.worker.main import settings
from app.worker.table_fencing import fenced_table
from tables import copartitioned_table

AUDIT_PARTITIONS = spec_by_name(AUDIT_TRAIL).partitions
DEDUPE_WINDOW = timedelta(days=1)

audit_chain = copartitioned_table(
    declare=coalescing_table, name=CHAIN_TABLE, topic=AUDIT_TRAIL,
    help="partition:seq -> hash-chained audit entry",
)

audit_chain_heads = copartitioned_table(
    declare=fenced_table, name="audit_chain_heads", topic=AUDIT_TRAIL,
    help="partition -> {offset, seq, hash} of the newest chain entry",
)

audit_processed = copartitioned_table(
    declare=coalescing_table, name="audit_processed", topic=AUDIT_TRAIL, default=int, value_type=int,
    help="audit event_id -> 1 + offset it was chained at (windowed, expiring)",
).tumbling(DEDUPE_WINDOW, expires=timedelta(hours=settings.dedupe_window_hours))


def chain_entry(partition: int, seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` of ``partition``'s chain (None: not there, or ``seq`` < 0)."""
    return audit_chain.get(entry_key(partition, seq)) if seq >= 0 else None
