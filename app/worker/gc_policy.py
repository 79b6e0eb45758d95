"""The worker's garbage-collector policy: fewer, not longer, pauses on a large heap.

CPython's cyclic collector scans a whole generation at a time. With thousands of websocket
connections a worker holds over a million tracked objects, and a full (generation 2)
collection then stops the event loop for most of a second: every frame in flight waits
(measured in ``docs/benchmarks.md``, websocket fan-out: P99 1.0 s at 10,000 clients, almost
all of it one collection). Objects that live a little while (queued frames, heartbeat timers)
survive the young collections and are what triggers the full ones.

The policy (``COSMIC_GC_TUNING``, on by default), applied once the worker has started:

* the young generation is collected every 50,000 allocations instead of 700, so short-lived
  objects die by reference counting before a collection could promote them, and a full
  collection is considered only after 100 middle ones (Python: 10);
* everything alive after start-up (modules, the app, agents, tables: about 120,000 objects)
  is frozen (``gc.freeze``): never scanned again.

Cyclic garbage is still collected, later: memory may hold more of it between collections.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

#: Collection thresholds of the three generations under the policy.
THRESHOLDS = (50_000, 20, 100)


def apply_gc_policy(*, enabled: bool) -> tuple[int, int, int]:
    """Apply the policy when ``enabled``; the collector's thresholds in force afterwards."""
    if enabled:
        gc.set_threshold(*THRESHOLDS)
        gc.collect()  # start-up garbage goes now, not frozen forever
        gc.freeze()
        logger.info("garbage collector: thresholds %s, %d start-up objects frozen", THRESHOLDS,
                    gc.get_freeze_count())
    return gc.get_threshold()  # type: ignore[return-value]
