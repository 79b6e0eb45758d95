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
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_FAUST_CREATE_WORKER_CONSUMER = AIOKafkaConsumerThread._create_worker_consumer
#: The wait given to every worker consumer created after :func:`install` (ms); None: Faust's.
_WAIT_MS: list[int | None] = [None]


def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    consumer = _FAUST_CREATE_WORKER_CONSUMER(self, transport)
    if _WAIT_MS[0] is not None:
        consumer._fetch_max_wait_ms = _WAIT_MS[0]
    return consumer


async def worker_consumer_fetch_wait(app: Any) -> int:
    """The fetch wait (ms) of an aiokafka consumer built as ``app``'s worker consumer is built
    (never started: no I/O); for tests."""
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        return consumer._fetch_max_wait_ms
    finally:
        await consumer.stop()


def install(*, fetch_max_wait_ms: int) -> None:
    """Give worker consumers created from now on ``fetch_max_wait_ms`` (idempotent)."""
    _WAIT_MS[0] = fetch_max_wait_ms
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
