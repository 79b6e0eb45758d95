"""Everything this project changes inside Faust (and the one reach into aiormq), in one package,
checked against the pinned versions (:data:`PINNED`): :func:`install` refuses any other
faust-streaming or aiokafka, and ``cosmic worker`` any other mode-streaming or aiormq
(:func:`check_versions`), with :class:`~app.core.errors.FaustVersionError`, since each change
below is written against that version's code.

* :mod:`.producer_buffer` — Faust's producer-buffer flush drains the buffer completely
  before offsets are committed (Faust's own gives up after 0.1 s: lost changelog records).
* :mod:`.startup` — a worker's start-up and shutdown without Faust's fixed waits: no RocksDB
  database created on assignment for a partition with nothing stored, no full garbage
  collection per table when nothing was revoked, no one-second sleep before the tables'
  channels, no second declaration of changelog topics created beforehand, 0.1 s instead of
  1 s at the end of shutdown.
* :mod:`.seek` — after a rebalance, stream partitions the group never committed are sought to
  their beginning: records Faust fetched while its flow was still suspended were dropped, and
  without a committed offset nothing sought them back (lost records when a worker joins).
* :mod:`.changelog` — a batch's table writes: the store write and the changelog record
  without Faust's per-write producer buffer and per-record persisted-offset write.
* :mod:`.connections` — aiokafka drops a connection whose broker went away without closing it:
  its pending requests were never answered nor failed (a producer hung for good after a broker
  restart). It is closed first, so they fail and are retried.
* :mod:`.producer_state` — what the producer waits for (health: a stalled producer).
* :mod:`.fetch` — the worker consumer's fetch wait is a setting (Faust writes 1.5 s into its
  consumer; a partition resumed after a rebalance waits for the fetch in flight: failover stall),
  and its fetcher leaves out the partitions Faust has paused (every active table's changelog
  partition was in every fetch, or held fetched records never read).
* :mod:`.drain` — Faust's consumer hands a fetched record to its streams without four tasks
  per record (``Service.wait_first`` per record: ~23 µs each) when the delivery completes at once.
* :mod:`.take` — batches that fill while the previous batch is handled (Faust's
  ``take_events`` stops filling and waits its whole window again after every batch).
* :mod:`.events` — setting Faust's per-task current event (the partition table writes use).
* :mod:`.topic_metadata` — owner routing makes the producer's metadata list a table's changelog
  topic before Faust hashes a key with it (aiokafka fetches only topics it was asked about).
* :mod:`.records` — Faust records read and built without Faust's per-field machinery, for
  the Avro codec (``app/core/codecs.py``).
* :mod:`.state` — reads of Faust state with no public API: the consumer's last committed
  offsets (health's commit age), a table's verified source topics (a changelog the consumer
  counts 0 partitions of), a store's raw local value (changelog fencing).
* :class:`App` — Faust's app without its ``Monitor`` sensor (per-record bookkeeping that
  feeds only Faust's own web stats, which are off; this project's health has its own sensor).
* :func:`use_uvloop` — the worker's event loop is uvloop's.
* :mod:`.amqp` — not Faust's: the RabbitMQ bridge's batch of publishes on one aiormq confirm
  channel in one write (aiormq's own publish costs a lock, a queued write and a task per message).

Why each, measured: docs/profiles.md and ``../shared/studies`` (Faust's per-record costs).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata
from typing import Any, Iterable

import faust

from app.core.errors import FaustVersionError
from app.worker.faust_internals import connections, drain, fetch, producer_buffer, seek, startup
from app.worker.faust_internals.events import set_current_event
from app.worker.faust_internals.startup import already_declared
from app.worker.faust_internals.take import take_batches

__all__ = ["App", "PINNED", "already_declared", "check_versions", "imported_versions", "install",
           "set_current_event", "take_batches", "use_uvloop"]

logger = logging.getLogger(__name__)

#: The distributions whose internals this package reaches into, at the versions it was written for.
PINNED: dict[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1",
                          "aiormq": "7.2.4"}


def check_versions(*, installed: dict[str, str] | None = None) -> None:
    """Raise :class:`FaustVersionError` unless every distribution of :data:`PINNED` is installed
    at its pinned version (``installed`` overrides the lookup, for tests)."""
    wrong = []
    for name, wanted in PINNED.items():
        try:
            have = installed[name] if installed is not None else metadata.version(name)
        except (KeyError, metadata.PackageNotFoundError):
            have = "not installed"
        if have != wanted:
            wrong.append(f"{name} {have} (this project patches {name} {wanted})")
    if wrong:
        raise FaustVersionError("app.worker.faust_internals was written against other versions: " + "; ".join(wrong)
                                + ". Install the versions pinned in pyproject.toml, or re-check each "
                                  "change in app/worker/faust_internals against the new code.")


def imported_versions() -> dict[str, str]:
    """The versions the imported modules declare (``__version__``; no metadata read from disk).
    mode-streaming's and aiormq's modules declare none of their own, so only
    :func:`check_versions` at worker start-up (``cosmic worker``) checks those."""
    import aiokafka

    return {"faust-streaming": faust.__version__, "aiokafka": aiokafka.__version__}


def install(*, fetch_max_wait_ms: int) -> None:
    """Check the imported faust and aiokafka against :data:`PINNED` and install the patches
    (idempotent; patches classes, no I/O). The worker checks every pinned distribution's
    installed metadata before it starts (:func:`check_versions` in ``cosmic worker``)."""
    imported = imported_versions()
    check_versions(installed={name: imported.get(name, PINNED[name]) for name in PINNED})
    producer_buffer.install()
    startup.install()
    seek.install()
    fetch.install(fetch_max_wait_ms=fetch_max_wait_ms)
    connections.install()
    drain.install()


class App(faust.App):
    """:class:`faust.App` without the ``Monitor`` sensor (see the module docstring)."""

    def on_init_dependencies(self) -> Iterable[Any]:
        dependencies = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return dependencies


def use_uvloop() -> bool:
    """Make uvloop the event loop of what runs next (the worker); False if uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; asyncio's loop works, slower
        logger.warning("uvloop is not installed: the worker runs on asyncio's own event loop")
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
