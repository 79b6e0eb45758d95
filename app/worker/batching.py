"""Batches of events inside one agent: decide in memory, write each table key once, send
every effect, await them once, then ack.

:func:`app.worker.streams.process_events` takes events in batches (:func:`app.worker.faust_internals.take_batches`) and runs
the agent's per-event handler on each inside a :class:`Batch`:

* **Tables coalesce.** Every table of this project is a :class:`CoalescingTable` (or a fenced
  one, which mixes :class:`CoalescingMixin` in). While a batch is active in the agent's task,
  ``table[k] = v``, ``del table[k]``, ``table[k]``, ``table.get(k)`` and ``k in table`` go to
  the batch's overlay, so a handler sees its own earlier writes (a key the batch has not
  written is read from the event partition's store with one lookup,
  :func:`app.worker.faust_internals.changelog.read_local`), and a key written by many
  events of the batch costs one store write and one changelog record when the batch ends
  (:meth:`Batch.flush`, with the event that wrote it last as Faust's current event, so the
  value lands in that event's partition). All of a batch's store writes happen in one
  synchronous step: a killed worker keeps all of them in its local store, or none. Their
  changelog records are handed to the producer with the batch's other sends
  (:mod:`app.worker.faust_internals.changelog`, not Faust's per-write path) and each changelog
  partition's persisted offset is recorded once they are acknowledged.
* **Kafka sends are awaited once.** :func:`app.worker.streams.emit` hands each record to the
  producer and keeps its future; the changelog records go to the Kafka client as one record
  batch per changelog partition (:func:`app.worker.faust_internals.changelog.send_records`);
  :meth:`Batch.finish` awaits them all, re-sending (with backoff) any the broker did not
  acknowledge.
* **Other confirmations are windowed.** :meth:`Batch.defer` queues a coroutine factory (a
  RabbitMQ publish waiting for its confirm); :meth:`Batch.finish` runs them with at most
  ``window`` in flight, while the Kafka sends are awaited (neither waits for the other), and
  returns when all succeeded.

Only after :meth:`Batch.finish` returns does the agent hand control back to Faust, which
then acks the batch's events: offsets never pass an effect that was not acknowledged.

Web views and timers run in other tasks, with no batch: they read and write the tables
directly (a batch's writes are visible to them once it is flushed, a few ms later).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

import faust
from aiokafka.errors import KafkaError
from faust.streams import current_event
from faust.types import EventT

from app.worker.faust_internals import changelog
from app.worker.faust_internals.events import set_current_event

logger = logging.getLogger(__name__)

_BATCH: ContextVar["Batch | None"] = ContextVar("cosmic_batch", default=None)
_DELETED = object()
_ABSENT = object()


def active_batch() -> "Batch | None":
    """The batch being handled in this task, if any."""
    return _BATCH.get()


@dataclass
class PendingSend:
    """A record handed to the producer, with what is needed to send it again."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    timestamp: float | None
    headers: list[tuple[str, bytes]]
    future: Any
    on_acked: Callable[[], None] | None = None
    changelog: changelog.ChangelogRecord | None = None


class Batch:
    """What one batch of an agent decided: table writes, Kafka sends, deferred confirmations."""

    def __init__(self, *, producer: Any, backoff: Callable[[int], float], window: int = 256,
                 direct_changelog: bool = True) -> None:
        self._producer = producer
        #: Changelog records go to ``producer`` with the batch's sends (False: Faust's own
        #: per-write path, for a producer that is not running, as in unit tests).
        self._direct_changelog = direct_changelog
        self._changelog: list[changelog.ChangelogRecord] = []
        self._window = max(1, window)
        self._backoff = backoff  # seconds before re-send attempt n (app.worker.streams.backoff_delay)
        #: (id(table), partition, key) -> [table, key, value or _DELETED, event that wrote it last].
        #: The partition is part of the slot: a table keeps one store per partition, and some
        #: keys (an agent's cursor) exist in every partition with different values (a global
        #: table's slot has partition None).
        self._writes: dict[tuple[int, Any], list[Any]] = {}
        self._sends: list[PendingSend] = []
        #: Changelog records handed over as Kafka record batches, with each batch's future.
        self._record_batches: list[tuple[list[changelog.ChangelogRecord], Any]] = []
        self._deferred: list[Callable[[], Awaitable[Any]]] = []
        self.table_writes = 0
        self.flushed_keys = 0
        #: What a handler derived from this batch's reads and writes and keeps for the batch's
        #: next events (e.g. the audit chain's head per partition); gone with the batch.
        self.memo: dict[str, Any] = {}

    @contextmanager
    def active(self) -> Iterator["Batch"]:
        """Make this the task's batch: table access goes through its overlay meanwhile."""
        token = _BATCH.set(self)
        try:
            yield self
        finally:
            _BATCH.reset(token)

    # -- the overlay -------------------------------------------------------------------------
    def lookup(self, table: Any, key: Any) -> Any:
        """The value this batch wrote for ``key`` in the current event's partition
        (``_DELETED``), or ``_ABSENT``."""
        if not self._writes:
            return _ABSENT
        entry = self._writes.get((id(table), _partition_of(table, current_event()), key))
        return _ABSENT if entry is None else entry[2]

    def write(self, table: Any, key: Any, value: Any) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError(f"table {getattr(table, 'name', table)}: write outside of an event")
        self.table_writes += 1
        slot = (id(table), _partition_of(table, event), key)
        entry = self._writes.get(slot)
        if entry is None:
            self._writes[slot] = [table, key, value, event]
        else:
            entry[2], entry[3] = value, event

    def flush(self) -> None:
        """Write each touched key to its store once (synchronously: all of them or none);
        their changelog records wait for :meth:`finish`."""
        if not self._writes:
            return
        previous = current_event()
        writes = changelog.StoreWrites()
        try:
            for table, key, value, event in self._writes.values():
                set_current_event(event)
                if self._direct_changelog and changelog.supports(table):
                    record = changelog.write_local(table=table, key=key, value=value, deleted=value is _DELETED,
                                                   partition=event.message.partition, writes=writes)
                    if record is not None:
                        self._changelog.append(record)
                else:
                    table._flush_key(key, value)
                self.flushed_keys += 1
            writes.commit()
        finally:
            set_current_event(previous)
            self._writes.clear()

    # -- Kafka sends ---------------------------------------------------------------------------
    async def send(self, *, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: list[tuple[str, bytes]],
                   on_acked: Callable[[], None] | None = None,
                   changelog_record: changelog.ChangelogRecord | None = None) -> None:
        """Hand a record to the producer; its acknowledgement is awaited by :meth:`finish`."""
        future = await self._producer.send(topic, key, value, partition, timestamp, headers)
        self._sends.append(PendingSend(topic=topic, key=key, value=value, partition=partition,
                                       timestamp=timestamp, headers=headers, future=future, on_acked=on_acked,
                                       changelog=changelog_record))

    def defer(self, factory: Callable[[], Awaitable[Any]]) -> None:
        """Run ``factory()`` when the batch finishes (at most ``window`` at once)."""
        self._deferred.append(factory)

    async def finish(self) -> None:
        """Flush the tables, await every send (re-sending failures) and, meanwhile, run the
        deferred work; an error of the deferred work is raised once the sends are acknowledged."""
        self.flush()
        records, self._changelog = self._changelog, []
        client = changelog.batch_client(self._producer) if records else None
        if client is not None:  # one record batch per changelog partition
            self._record_batches += await changelog.send_records(client=client, records=records)
        else:
            for record in records:
                await self.send(topic=record.topic, key=record.key, value=record.value, partition=record.partition,
                                timestamp=None, headers=[], changelog_record=record)
        deferred, self._deferred = self._deferred, []
        if not deferred:
            await self._await_sends()
            return
        # The deferred work (RabbitMQ publishes) depends on nothing Kafka acknowledges: it runs
        # while the sends are awaited, so a batch waits for the slower of the two, not their sum.
        gate = asyncio.Semaphore(self._window)

        async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await factory()

        confirmations = asyncio.ensure_future(asyncio.gather(*(run(f) for f in deferred)))
        try:
            await self._await_sends()
        except BaseException:
            confirmations.cancel()
            await asyncio.gather(confirmations, return_exceptions=True)
            raise
        await confirmations

    async def _await_sends(self) -> None:
        sends, self._sends = self._sends, []
        record_batches, self._record_batches = self._record_batches, []
        if not sends and not record_batches:
            return
        results = await asyncio.gather(*(s.future for s in sends), *(f for _, f in record_batches),
                                       return_exceptions=True)
        persisted: dict[tuple[int, str, int], tuple[Any, int]] = {}

        def acknowledged(record: changelog.ChangelogRecord, offset: Any) -> None:
            if isinstance(offset, int):
                slot = (id(record.table), record.topic, record.partition)
                known = persisted.get(slot)
                if known is None or known[1] < offset:
                    persisted[slot] = (record.table, offset)

        for send, result in zip(sends, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                result = await self._resend(send, result)
            if send.on_acked is not None:
                send.on_acked()
            if send.changelog is not None:
                acknowledged(send.changelog, getattr(result, "offset", None))
        for (members, _), result in zip(record_batches, results[len(sends):]):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                # Kafka wrote none of the batch: each record again, alone, until acknowledged
                # (each key is in a batch once, so their order among themselves does not matter).
                for record in members:
                    metadata = await self._resend(PendingSend(
                        topic=record.topic, key=record.key, value=record.value, partition=record.partition,
                        timestamp=None, headers=[], future=None, changelog=record), result)
                    acknowledged(record, getattr(metadata, "offset", None))
            elif members:  # the batch's base offset: its records are that and the next ones
                base = getattr(result, "offset", None)
                acknowledged(members[-1], base + len(members) - 1 if isinstance(base, int) else None)
        changelog.record_persisted(persisted)

    async def _resend(self, send: PendingSend, error: BaseException) -> Any:
        """Send one record again until Kafka acknowledges it (the broker is unavailable: the
        batch is not acked meanwhile, so nothing is lost); returns its record metadata."""
        attempt = 0
        while True:
            attempt += 1
            logger.warning("Kafka did not acknowledge a record for %s (attempt %d): %r; sending it again",
                           send.topic, attempt, error)
            await asyncio.sleep(self._backoff(attempt))
            try:
                return await self._producer.send_and_wait(send.topic, send.key, send.value, send.partition,
                                                          send.timestamp, send.headers)
            except KafkaError as exc:
                error = exc


def _partition_of(table: Any, event: EventT | None) -> int | None:
    """The store partition a key of ``table`` is read from and written to for ``event``
    (None for a global table: one value per key, whichever partition wrote it)."""
    if event is None or getattr(table, "is_global", False) or getattr(table, "use_partitioner", False):
        return None
    return event.message.partition


def _stored(table: Any, key: Any) -> Any:
    """``table``'s stored value of ``key`` for the current event, read directly
    (:func:`app.worker.faust_internals.changelog.read_local`), or ``UNSUPPORTED``."""
    event = current_event()
    if event is None:
        return changelog.UNSUPPORTED
    return changelog.read_local(table=table, key=key, partition=event.message.partition)


class CoalescingMixin:
    """Mix into a :class:`faust.Table`: inside a :class:`Batch`, reads and writes go through
    the batch's overlay (see the module docstring); outside one, the table is Faust's."""

    def __getitem__(self, key: Any) -> Any:
        batch = _BATCH.get()
        if batch is not None:
            value = batch.lookup(self, key)
            if value is _ABSENT:
                value = _stored(self, key)
            if value is _DELETED or value is changelog.ABSENT:
                return self.__missing__(key)  # type: ignore[attr-defined]
            if value is not changelog.UNSUPPORTED:
                return value
        return super().__getitem__(key)  # type: ignore[misc]

    def __setitem__(self, key: Any, value: Any) -> None:
        batch = _BATCH.get()
        if batch is None:
            super().__setitem__(key, value)  # type: ignore[misc]
        else:
            batch.write(self, key, value)

    def __delitem__(self, key: Any) -> None:
        batch = _BATCH.get()
        if batch is None:
            super().__delitem__(key)  # type: ignore[misc]
        else:
            if not self.__contains__(key):
                raise KeyError(key)
            batch.write(self, key, _DELETED)

    def __contains__(self, key: Any) -> bool:
        batch = _BATCH.get()
        if batch is not None:
            value = batch.lookup(self, key)
            if value is _ABSENT:
                value = _stored(self, key)
            if value is not changelog.UNSUPPORTED:
                return value is not _DELETED and value is not changelog.ABSENT
        return super().__contains__(key)  # type: ignore[misc]

    def _flush_key(self, key: Any, value: Any) -> None:
        """Write one coalesced key to the store and its changelog (Faust's own path)."""
        if value is _DELETED:
            if super().__contains__(key):  # type: ignore[misc]
                super().__delitem__(key)  # type: ignore[misc]
        else:
            super().__setitem__(key, value)  # type: ignore[misc]


class CoalescingTable(CoalescingMixin, faust.Table):
    """A :class:`faust.Table` whose writes inside a batch are coalesced per key."""


def coalescing_table(app: faust.App, name: str, **kwargs: Any) -> CoalescingTable:
    """Declare a :class:`CoalescingTable` on ``app``, as ``app.Table(name, **kwargs)`` would."""
    return app.tables.add(CoalescingTable(app, name=name, beacon=app.tables.beacon, **kwargs))  # type: ignore[return-value]

