"""Faust's per-task current event: what table reads and writes use to pick a partition."""

from __future__ import annotations

import weakref

from faust.streams import _current_event
from faust.types import EventT


def set_current_event(event: EventT | None) -> None:
    """Make ``event`` Faust's current event in this task: table reads and writes go to its
    partition's store and changelog partition (``faust.streams._current_event``)."""
    _current_event.set(weakref.ref(event) if event is not None else None)
