"""Stream partitions the consumer group never committed start at their beginning after every
rebalance, as ``consumer_auto_offset_reset="earliest"`` promises.

Faust resumes the consumer's partitions when table recovery ends and only then seeks them to
their committed offsets (``Consumer.perform_seek``, one committed-offset request per assigned
partition: 0.8 s for this app's ~250). Records fetched in between reach ``_drain_messages``
while the flow is still suspended: ``wait_first(callback(message), suspend_flow.wait())``
returns at once, the record is never delivered, and its offset becomes the partition's read
offset. A partition with a committed offset is sought back to it and read again; one without
(nothing committed yet: a new topic, a new group) keeps aiokafka's position past the dropped
records, and no agent ever sees them. Measured in ``tests/reliability/test_scale_out.py``
(about one run in four): a worker keeping its partitions while a second one joined, with
events arriving, never applied the first ~8 records of each of its partitions (their jobs'
later events were dead-lettered ``unknown-job``). The agents' cursors cannot see such a gap:
nothing was handled before it.

Here, after Faust's own seek, every assigned partition of a non-changelog topic that has no
committed offset (or offset 0) is sought to its beginning. Records that had been handled already come
again and are replays to the agents (offset fences, ``tables/agent_cursors.py``).
Changelog partitions are left alone: table recovery positions them itself.

Faust's seek itself asks for the committed offsets with one request per assigned partition
(aiokafka's ``seek_to_committed`` calls ``committed(tp)`` in a loop): 1.5 s for this app's ~250
partitions on this machine, measured in the scale-out test's worker log between "Seek stream
partitions to committed offsets" and "Worker ready", and all of it is failover stall: no
event is handled meanwhile. Here all of them are fetched in one OffsetFetch request and each
partition is sought exactly as aiokafka's loop does (:func:`seek_to_committed_at_once`).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import Consumer
from faust.types import TP

_FAUST_PERFORM_SEEK = Consumer.perform_seek


def never_committed(*, committed: dict[Any, int | None], changelog_topics: set[str]) -> list[Any]:
    """The partitions of ``committed`` (partition → committed offset, None or < 0 for none)
    that belong to a stream topic and have no committed offset past 0 (aiokafka's
    ``seek_to_committed`` seeks only offsets > 0, so a partition committed at 0 is left where
    the dropped records put it, like one never committed)."""
    return [tp for tp, offset in committed.items()
            if (offset is None or offset <= 0) and tp.topic not in changelog_topics]


async def seek_to_committed_at_once(consumer: AIOKafkaConsumer) -> dict[Any, int | None]:
    """``consumer.seek_to_committed()`` with one committed-offset request for every assigned
    partition instead of one each: the same offsets (None: never committed), the same seeks
    (only offsets > 0, as aiokafka does). Runs in the consumer's thread."""
    partitions = consumer._subscription.assigned_partitions()
    commit_map = await consumer._coordinator.fetch_committed_offsets(list(partitions))
    committed: dict[Any, int | None] = {}
    for tp in partitions:
        offset = commit_map[tp].offset if tp in commit_map else None
        committed[tp] = None if offset == -1 else offset
        if offset and offset > 0:
            consumer._fetcher.seek_to(tp, offset)
    return committed


async def _perform_seek(self: Consumer) -> None:
    """Faust's ``perform_seek`` (committed offsets in one request), then never-committed
    stream partitions to their beginning."""
    read_offset = self._read_offset
    thread = self._thread  # type: ignore[attr-defined]
    committed = await thread.call_thread(seek_to_committed_at_once, thread._ensure_consumer())
    read_offset.update({tp: offset if offset is not None and offset >= 0 else None
                        for tp, offset in committed.items()})
    self._committed_offset.update({TP(tp.topic, tp.partition): offset if offset else None
                                   for tp, offset in committed.items() if offset is not None})
    if self.app.conf.consumer_auto_offset_reset != "earliest":
        return
    fresh = never_committed(committed=dict(committed), changelog_topics=set(self.app.tables.changelog_topics))
    if fresh:
        await self._thread.seek_to_beginning(*fresh)  # type: ignore[attr-defined]
        for tp in fresh:
            read_offset[TP(tp.topic, tp.partition)] = None


def install() -> None:
    """Replace ``Consumer.perform_seek`` (idempotent)."""
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
