"""A worker's start-up and shutdown without Faust's fixed waits (docs/profiles.md, "start-up").

* ``Store.revoke_partitions`` (RocksDB) runs ``gc.collect()`` on every call, for every table
  and rebalance, even when it released no database: about 0.1 s each on a started worker, 2.4 s
  for this app's 24 tables before the first assignment is served. Here it collects only when it
  released a database (the collection is what closes the released handle and its lock). A
  revoked partition's persisted offset not yet written (:mod:`.changelog`) is forgotten.
* ``Store.assign_partitions`` (RocksDB) opens a database for every assigned partition of every
  table, creating it when it does not exist: 241 databases here, 8–25 ms each (RocksDB writes
  and syncs a new database's files), 2–4 s before a fresh worker serves. Here a partition whose
  database is not on disk is not opened on assignment; its first read or write opens (creates)
  it, as Faust's ``_db_for_partition`` always does, and its persisted offset is "none" without
  creating it. A partition with a database on disk is opened on assignment as before, so every
  stored key is visible to reads that span partitions.
* ``TableManager.on_start`` sleeps one second before it registers the tables' changelog
  channels, giving tables declared while the app starts time to be added. Every table of this
  app is declared on import (``app.discover()`` runs before the worker starts), so it does not.
* ``Topic.maybe_declare`` creates a topic with one admin request per topic, twice per table
  (the table's start and its recovery). ``cosmic worker`` creates every changelog topic in one
  request before Faust starts (``app.ops.topic_admin.ensure_changelog_topics``) and names them with
  :func:`already_declared`; those are not declared again.
* mode's ``Worker._sentinel_task`` keeps the closing event loop running one more second after
  every service stopped and every task was gathered; 0.1 s lets their last callbacks run.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any, Optional

from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.manager import TableManager
from faust.topics import Topic
from faust.types import TP
from mode.worker import Worker as ModeWorker

from app.worker.faust_internals import changelog

_DECLARED: set[str] = set()


def already_declared(names: list[str] | set[str]) -> None:
    """Topics that exist with the settings Faust would declare (created by this process)."""
    _DECLARED.update(names)


async def _maybe_declare(self: Topic) -> None:
    if self.topics and all(name in _DECLARED for name in self.topics):
        return
    await self.declare()


def _revoke_partitions(self: RocksDBStore, table: Any, tps: set) -> None:
    released = False
    changelog.forget_offsets(store=self, partitions={tp.partition for tp in tps
                                                     if tp.topic in table.changelog_topic.topics})
    for tp in tps:
        if tp.topic in table.changelog_topic.topics:
            db = self._dbs.pop(tp.partition, None)
            if db is not None:
                self.logger.info(f"closing db {tp.topic} partition {tp.partition}")
                released = True
    if released:
        gc.collect()


def _nothing_stored(store: RocksDBStore, partition: int) -> bool:
    """Neither open nor on disk: the partition's database does not exist yet."""
    return partition not in store._dbs and not os.path.exists(store.partition_path(partition))


async def _assign_partitions(self: RocksDBStore, table: Any, tps: set, generation_id: int = 0) -> None:
    self.rebalance_ack = True
    standby_tps = self.app.assignor.assigned_standbys()
    my_topics = table.changelog_topic.topics
    for tp in tps:
        if tp.topic in my_topics and tp not in standby_tps and self.rebalance_ack:
            if _nothing_stored(self, tp.partition):
                continue  # nothing stored yet: opened (created) by its first read or write
            await self._try_open_db_for_partition(tp.partition, generation_id=generation_id)
            await asyncio.sleep(0)


def _persisted_offset(self: RocksDBStore, tp: TP) -> Optional[int]:
    if _nothing_stored(self, tp.partition):
        return None
    offset = self._db_for_partition(tp.partition).get(self.offset_key)
    return int(offset) if offset is not None else None


async def _table_manager_on_start(self: TableManager) -> None:
    await asyncio.sleep(0)
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


async def _sentinel_task(self: ModeWorker) -> None:
    await asyncio.sleep(0.1)


def install() -> None:
    """Replace the six methods (idempotent)."""
    Topic.maybe_declare = _maybe_declare  # type: ignore[method-assign]
    RocksDBStore.revoke_partitions = _revoke_partitions  # type: ignore[method-assign]
    RocksDBStore.assign_partitions = _assign_partitions  # type: ignore[method-assign]
    RocksDBStore.persisted_offset = _persisted_offset  # type: ignore[method-assign]
    TableManager.on_start = _table_manager_on_start  # type: ignore[method-assign]
    ModeWorker._sentinel_task = _sentinel_task  # type: ignore[method-assign]
