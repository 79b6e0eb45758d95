"""What Faust's Kafka producer is waiting for (aiokafka has no public call for it).

A producer that stops delivering shows nowhere else: sends and ``flush()`` (which Faust's
commit awaits) simply wait. :func:`producer_state` reads the aiokafka producer under Faust's:
the age of the oldest batch not yet acknowledged, whether its sender task runs, the brokers
a produce request is in flight to, the requests each connection still waits an answer for,
and whether a metadata update is pending. Health reports it (``producer_oldest_batch_seconds``)
and logs it when a batch has waited too long.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ProducerState:
    """A snapshot of the aiokafka producer's delivery state."""

    started: bool
    sender_running: bool = False
    sender_error: str | None = None
    batches_queued: int = 0
    batches_in_flight: int = 0
    oldest_batch_seconds: float = 0.0
    in_flight_nodes: tuple[Any, ...] = ()
    metadata_update_pending: bool = False
    connect_lock_held: bool = False
    #: ``"<node>/<group>" -> the requests awaiting an answer on it`` (their types; connections with any)
    pending_requests: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: where each produce-request task of the sender waits (its chain of coroutines, innermost last)
    send_tasks_waiting_in: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a log."""
        if not self.started:
            return "producer not started"
        sender = "running" if self.sender_running else f"STOPPED ({self.sender_error})"
        return (f"oldest unacknowledged batch {self.oldest_batch_seconds:.1f} s; {self.batches_queued} queued, "
                f"{self.batches_in_flight} in flight to nodes {list(self.in_flight_nodes)}; sender {sender}; "
                f"metadata update pending: {self.metadata_update_pending}; connect lock held: "
                f"{self.connect_lock_held}; requests awaiting an answer: {self.pending_requests or 'none'}; "
                f"produce tasks waiting in: {list(self.send_tasks_waiting_in) or 'none'}")


def producer_state(producer: Any, *, trace_after_seconds: float = 10.0) -> ProducerState:
    """The state of the aiokafka producer under Faust's ``producer`` (not started: ``started``
    is False). Where the produce tasks wait is traced only once the oldest batch is
    ``trace_after_seconds`` old (it walks every task of the event loop)."""
    client = getattr(producer, "_producer", None)
    sender = getattr(client, "_sender", None)
    accumulator = getattr(client, "_message_accumulator", None)
    if client is None or sender is None or accumulator is None:
        return ProducerState(started=False)
    task = sender.sender_task
    running = task is not None and not task.done()
    error = None
    if task is not None and task.done():
        error = "cancelled" if task.cancelled() else repr(task.exception())
    queued = [batch for batches in accumulator._batches.values() for batch in batches]
    in_flight = list(accumulator._pending_batches)
    now = time.monotonic()
    oldest = max((now - batch._ctime for batch in (*queued, *in_flight)), default=0.0)
    kafka = client.client
    pending = {f"{node}/{getattr(group, 'name', group)}":
               tuple(type(request).__name__ for _, request, _ in conn._requests)
               for (node, group), conn in list(kafka._conns.items()) if conn._requests}
    lock = kafka._get_conn_lock_value
    return ProducerState(
        started=True, sender_running=running, sender_error=error, batches_queued=len(queued),
        batches_in_flight=len(in_flight), oldest_batch_seconds=round(oldest, 3),
        in_flight_nodes=tuple(sorted(sender._in_flight, key=str)),
        metadata_update_pending=kafka._md_update_fut is not None,
        connect_lock_held=bool(lock is not None and lock.locked()), pending_requests=pending,
        send_tasks_waiting_in=(tuple(_waiting_in(task) for task in _produce_tasks())
                               if in_flight and oldest >= trace_after_seconds else ()),
    )


def _produce_tasks() -> list[asyncio.Task[Any]]:
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running loop
        return []
    return [t for t in tasks if getattr(t.get_coro(), "__qualname__", "") == "Sender._send_produce_req"]


def _waiting_in(task: asyncio.Task[Any]) -> str:
    """The chain of coroutines ``task`` is suspended in, innermost last (``function:line``)."""
    frames, awaited = [], task.get_coro()
    for _ in range(20):
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            if awaited is not None:
                frames.append(type(awaited).__name__)
            break
        frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(frames)
