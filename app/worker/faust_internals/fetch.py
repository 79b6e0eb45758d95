"""How long the broker may hold the worker consumer's fetch request.

Faust creates its worker consumer with ``fetch_max_wait_ms=1500``, written into the call
(``AIOKafkaConsumerThread._create_worker_consumer``; no Faust setting reaches it). aiokafka
keeps one fetch request in flight per broker, and a partition it is not fetching — one
Faust resumes after a rebalance's table recovery, or after its stream's buffer drained —
joins a request only once the one in flight to that broker returns
(``Fetcher._get_actions_per_node``: "We have in-flight fetches to this node"). When that
request holds only partitions with nothing new (a caught-up partition, a standby's changelog),
the broker keeps it the whole wait: up to 1.5 s before the partitions a worker has just taken
over are read at all. Measured in ``tests/reliability/test_scale_out.py`` (one of two workers
SIGKILLed, kill to the first moved job's change), alternating runs: median 9.6 s (7.0–10.3)
at 1,500 ms, 7.35 s (7.0–8.1) at 100 ms (docs/profiles.md, 2026-12-07 fourth part).

Here the consumer is created as Faust creates it and then given ``COSMIC_CONSUMER_FETCH_MAX_WAIT_MS``
before it starts (aiokafka builds its fetcher from it at start). A request that finds records
is answered at once either way; an idle worker sends a fetch per broker every this many ms.

**What Faust pauses is not fetched.** Faust pauses a partition in its own flow control
(``Consumer.pause_partitions``: every active table's changelog partitions once recovery is done,
everything during a rebalance) and never in aiokafka, whose fetcher goes on fetching it: every
fetch request names every partition of the assignment that holds no unread records — 121 of a
worker's 289 here, the changelog partitions no record was written to yet among them — and a
changelog partition that got a record (the worker's own writes) keeps the fetched records for
good, never read. At 50 events/s the worker's consumer thread, mostly this fetcher, was 40 % of
its CPU (docs/profiles.md, 2026-12-08). :func:`_get_actions_per_node` leaves out the partitions
Faust has paused (read from Faust's consumer, which the aiokafka consumer is given when it is
created) and drops the records fetched for them: their position is where Faust stopped, so a
partition Faust resumes is fetched from there again. While Faust has paused the whole
assignment (a rebalance), the fetcher looks again every :data:`ALL_PAUSED_RECHECK_S` for what
Faust resumed (table recovery starts by resuming changelog partitions).
"""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_FAUST_CREATE_WORKER_CONSUMER = AIOKafkaConsumerThread._create_worker_consumer
_AIOKAFKA_GET_ACTIONS_PER_NODE = Fetcher._get_actions_per_node
#: The wait given to every worker consumer created after :func:`install` (ms); None: Faust's.
_WAIT_MS: list[int | None] = [None]
#: Where an aiokafka consumer's subscription state keeps the Faust consumer whose paused
#: partitions its fetcher leaves out (the fetcher shares that state object with its consumer).
FAUST_CONSUMER_ATTR = "_cosmic_faust_consumer"
#: Seconds between looks for resumed partitions while Faust has paused every assigned one.
ALL_PAUSED_RECHECK_S = 0.05


def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    consumer = _FAUST_CREATE_WORKER_CONSUMER(self, transport)
    if _WAIT_MS[0] is not None:
        consumer._fetch_max_wait_ms = _WAIT_MS[0]
    setattr(consumer._subscription, FAUST_CONSUMER_ATTR, self.consumer)
    return consumer


class _Unpaused:
    """An aiokafka assignment seen without the partitions Faust has paused (what
    ``Fetcher._get_actions_per_node`` reads of it: ``tps`` and ``state_value``)."""

    def __init__(self, assignment: Any, tps: list[Any]) -> None:
        self._assignment = assignment
        self.tps = tps

    def state_value(self, tp: Any) -> Any:
        return self._assignment.state_value(tp)


def _get_actions_per_node(self: Fetcher, assignment: Any) -> Any:
    """aiokafka's, for the assigned partitions Faust has not paused (see the module docstring)."""
    faust_consumer = getattr(self._subscriptions, FAUST_CONSUMER_ATTR, None)
    if faust_consumer is None or not faust_consumer._paused_partitions:
        return _AIOKAFKA_GET_ACTIONS_PER_NODE(self, assignment)
    paused = set(faust_consumer._paused_partitions)  # one C-level copy: Faust's thread changes it
    for tp in [tp for tp in self._records if tp in paused]:
        del self._records[tp]
    tps = [tp for tp in assignment.tps if tp not in paused]
    requests, resets, timeout, invalid_metadata, resume_futures = _AIOKAFKA_GET_ACTIONS_PER_NODE(
        self, _Unpaused(assignment, tps))
    if not tps:
        timeout = ALL_PAUSED_RECHECK_S if timeout is None else min(timeout, ALL_PAUSED_RECHECK_S)
    return requests, resets, timeout, invalid_metadata, resume_futures


async def worker_consumer_fetch_wait(app: Any) -> int:
    """The fetch wait (ms) of an aiokafka consumer built as ``app``'s worker consumer is built
    (never started: no I/O); for tests."""
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._fetch_max_wait_ms
    finally:
        await consumer.stop()


def install(*, fetch_max_wait_ms: int) -> None:
    """Give worker consumers created from now on ``fetch_max_wait_ms``, and make their fetchers
    leave out what Faust has paused (idempotent)."""
    _WAIT_MS[0] = fetch_max_wait_ms
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    Fetcher._get_actions_per_node = _get_actions_per_node  # type: ignore[method-assign]
