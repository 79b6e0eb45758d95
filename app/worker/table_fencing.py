"""Changelog fencing: table recovery never replaces a local value with an older one.

Faust writes a table value to the local store at once and to the changelog when the
producer gets to it, and it records a partition's *persisted offset* (where recovery starts
reading the changelog) only when a changelog record's acknowledgement has been handled. A
worker SIGKILLed while it works therefore restarts with local values newer than its
persisted offset says: recovery re-reads changelog records that were acknowledged but not
yet recorded, and a key's older record among them overwrote the key's newer local value —
whose own changelog record may have died with the worker. The job was then one transition
behind while the dedupe window of that time (written locally too) said the event had been applied, so
the event's replay was refused as a duplicate: a lost transition
(``tests/reliability/test_worker_crash_cycles.py`` reproduced it in 2 jobs of 600).

Our offset-fenced values carry the source offset that produced them (``"offset"``, or
``"offsets"`` per source partition). A fenced table applies a changelog record only if its
value is not older than the key's current local value; an older one is skipped (and
counted). Values without offsets, and deletions, are applied as Faust would. The agents'
replay fence then finds the newer local value and re-asserts it, so its changelog record is
written again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Callable, Iterable

import faust
from faust.types import EventT, TP

from app.worker.batching import CoalescingMixin
from app.worker.faust_internals.state import stored_value

logger = logging.getLogger(__name__)

#: A value's position: source partition (or "" for a single one) → the offset it reflects.
Position = dict[str, int]

#: Changelog records not applied because the local value was newer, by table name.
FENCED_RECORDS: Counter[str] = Counter()


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def offset_position(value: Any) -> Position | None:
    """The position of a table value: its ``"offset"``, or its ``"offsets"`` per partition."""
    if not isinstance(value, dict):
        return None
    offset = value.get("offset")
    if _is_offset(offset):
        return {"": offset}
    offsets = value.get("offsets")
    if isinstance(offsets, dict) and offsets and all(_is_offset(o) for o in offsets.values()):
        return {str(p): o for p, o in offsets.items()}
    return None


def is_older(*, incoming: Position | None, local: Position | None) -> bool:
    """True if ``local`` is at or past ``incoming`` everywhere and strictly newer somewhere."""
    if not incoming or not local:
        return False
    if any(local.get(p, -1) < o for p, o in incoming.items()):
        return False
    return local != incoming


def _decoded(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return json.loads(bytes(value))
        except (UnicodeDecodeError, ValueError):
            return None
    return value


def fence_batch(
    batch: Iterable[EventT], *, local_value: Callable[[EventT], Any],
    position: Callable[[Any], Position | None] = offset_position,
) -> tuple[list[EventT], int]:
    """Split a changelog batch: (records to apply, number skipped as older than local)."""
    latest: dict[Any, Position | None] = {}
    kept: list[EventT] = []
    skipped = 0
    for event in batch:
        key = event.message.key
        raw = event.message.value
        if raw is None:  # deletion
            kept.append(event)
            latest[key] = None
            continue
        incoming = position(_decoded(raw))
        current = latest[key] if key in latest else position(_decoded(local_value(event)))
        if is_older(incoming=incoming, local=current):
            skipped += 1
            latest[key] = current
            continue
        kept.append(event)
        latest[key] = incoming
    return kept, skipped


class _ChangelogFence:
    """Mixin for :class:`faust.Table` / :class:`faust.GlobalTable`: see the module docstring."""

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:  # noqa: D102 - Faust API
        events = list(batch)
        kept, skipped = fence_batch(events, local_value=self._local_raw_value)
        super().apply_changelog_batch(kept)  # type: ignore[misc]
        if skipped:
            name = self.name  # type: ignore[attr-defined]
            FENCED_RECORDS[name] += skipped
            logger.info("table %s: %d changelog record(s) older than the local value not applied", name, skipped)
            # The skipped records were read all the same: recovery resumes after them.
            newest: dict[TP, int] = {}
            for event in events:
                tp, offset = event.message.tp, event.message.offset
                newest[tp] = max(offset, newest.get(tp, offset))
            for tp, offset in newest.items():
                self.data.set_persisted_offset(tp, offset)  # type: ignore[attr-defined]

    def _local_raw_value(self, event: EventT) -> Any:
        return stored_value(self, event)  # type: ignore[arg-type]


class FencedTable(CoalescingMixin, _ChangelogFence, faust.Table):
    """A table whose changelog recovery never goes back in time (see the module docstring)."""


class FencedGlobalTable(CoalescingMixin, _ChangelogFence, faust.GlobalTable):
    """A global table whose changelog recovery never goes back in time."""


def fenced_table(app: faust.App, name: str, **kwargs: Any) -> FencedTable:
    """Declare a :class:`FencedTable` on ``app``, as ``app.Table(name, **kwargs)`` would."""
    return app.tables.add(FencedTable(app, name=name, beacon=app.tables.beacon, **kwargs))  # type: ignore[return-value]


def fenced_global_table(app: faust.App, name: str, **kwargs: Any) -> FencedGlobalTable:
    """Declare a :class:`FencedGlobalTable` on ``app``, as ``app.GlobalTable`` would."""
    table = FencedGlobalTable(
        app, name=name, beacon=app.tables.beacon, standby_buffer_size=1, is_global=True, **kwargs
    )
    return app.tables.add(table)  # type: ignore[return-value]
