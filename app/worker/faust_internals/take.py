"""Batches of events that fill while the previous batch is being handled.

Faust's ``Stream.take_events(max_, within)`` stops filling its buffer while the caller
handles a batch, and then waits ``within`` seconds again from the moment it resumes. Under a
backlog that caps a batch at what arrives in ``within`` (about 20 events per partition here),
so per-batch savings (a key written once, sends awaited once) stay small exactly when they
matter.

:func:`take_batches` keeps filling the next batch meanwhile (up to ``max_`` events; then the
stream waits, as Faust's does): a batch is yielded once it is full, or ``within`` seconds
after its first event arrived, which under a backlog is at once. So a batch grows with the
load (what arrived while the previous one was handled), and an idle stream still hands an
event over within ``within``. Each batch's events are acked after the caller resumes the
generator (Faust's own ``take_events`` acks in a ``finally``, so a batch whose handling
raised was acked too); events buffered meanwhile stay unacked, so a commit never passes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from faust.types import EventT


async def take_batches(stream: Any, *, max_events: int, within: float) -> AsyncIterator[list[EventT]]:
    """Yield lists of at most ``max_events`` events of ``stream`` (see the module docstring)."""
    buffer: list[EventT] = []
    arrived = asyncio.Event()  # the buffer holds at least one event
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()
    loop = asyncio.get_running_loop()
    first_at = 0.0

    async def add_to_buffer(value: Any) -> Any:
        nonlocal first_at
        while not room.is_set():
            await stream.wait(room)
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: the stream has no current event")
        if not buffer:
            first_at = loop.time()
            arrived.set()
        buffer.append(event)
        if len(buffer) >= max_events:
            full.set()
            room.clear()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked here, after the caller handled the batch
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not buffer:
                await stream.wait_for_stopped(arrived)
                if not buffer:
                    continue
            remaining = first_at + within - loop.time()
            if remaining > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=remaining)
            batch = buffer[:]
            buffer.clear()
            arrived.clear()
            full.clear()
            room.set()
            yield batch
            # Only once the caller resumed: a batch whose handling raised stays unacked (it
            # is consumed again after the restart) instead of being acked and skipped.
            for event in batch:
                await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
