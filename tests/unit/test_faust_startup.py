"""app/worker/faust_internals/startup.py: a fresh worker's RocksDB store opens no database for a
partition with nothing on disk (opened by its first write instead), one with data is opened on
assignment; changelog topics created before Faust starts are not declared again."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from faust.stores.rocksdb import Store
from faust.topics import Topic
from faust.types import TP

import app.worker.main  # noqa: F401 - installs the patches
from app.worker.faust_internals import already_declared, startup
from tables.job_state import job_state


@pytest.fixture
def store_factory(tmp_path: Path):
    made: list[Store] = []

    def make() -> Store:
        store = Store("rocksdb://", app.worker.main.app, job_state)
        store.partition_path = lambda partition: tmp_path / f"job_state-{partition}.db"  # type: ignore[method-assign]
        made.append(store)
        return store

    yield make
    for store in made:
        store._dbs.clear()
    gc.collect()


def _tps(*partitions: int) -> set[TP]:
    return {TP(job_state.changelog_topic.get_topic_name(), p) for p in partitions}


async def test_partitions_with_nothing_on_disk_are_not_created_on_assignment(store_factory, tmp_path: Path):
    assert Store.assign_partitions is startup._assign_partitions
    store = store_factory()
    await store.assign_partitions(job_state, _tps(0, 1, 2))
    assert store._dbs == {} and list(tmp_path.iterdir()) == []
    (tp0,) = _tps(0)
    assert store.persisted_offset(tp0) is None
    assert list(tmp_path.iterdir()) == []  # asking for the offset created nothing either

    store.set_persisted_offset(tp0, 41)  # the first write opens (creates) the partition's database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job_state-0.db"]


async def test_a_partition_with_data_on_disk_is_opened_on_assignment(store_factory, tmp_path: Path):
    first = store_factory()
    (tp0,) = _tps(0)
    first.set_persisted_offset(tp0, 41)
    first.revoke_partitions(job_state, _tps(0))  # releases the database (and its lock)
    assert first._dbs == {}

    second = store_factory()
    await second.assign_partitions(job_state, _tps(0, 1))
    assert sorted(second._dbs) == [0]
    assert second.persisted_offset(tp0) == 41
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job_state-0.db"]


async def test_topics_created_beforehand_are_not_declared_again(monkeypatch):
    declared: list[str] = []

    async def declare(self: Topic) -> None:
        declared.extend(self.topics)

    monkeypatch.setattr(Topic, "declare", declare)
    monkeypatch.setattr(startup, "_DECLARED", set())
    created = app.worker.main.app.topic("made-before-start")
    other = app.worker.main.app.topic("not-made-before-start")
    already_declared({"made-before-start"})
    await created.maybe_declare()
    await other.maybe_declare()
    assert declared == ["not-made-before-start"]
