"""Changelog fencing (app/worker/table_fencing.py): recovery never puts an older value over a newer
local one — the cause of a lost transition after repeated worker kills."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from app.worker.table_fencing import (
    FENCED_RECORDS,
    FencedGlobalTable,
    FencedTable,
    fence_batch,
    is_older,
    offset_position,
)

CHANGELOG = "fence-test-js-changelog"


def changelog_event(offset: int, value: Any, *, key: str = "job-1", partition: int = 1) -> SimpleNamespace:
    raw = json.dumps(value).encode() if value is not None else None
    message = SimpleNamespace(key=json.dumps(key).encode(), value=raw, partition=partition, offset=offset,
                              tp=TP(CHANGELOG, partition))
    return SimpleNamespace(key=key, value=value, message=message)


@pytest.fixture
def rocksdb_table(tmp_path):
    """A fenced table on a real RocksDB store (its own app, no broker needed)."""
    fence_app = faust.App(f"fence-{tmp_path.name}", broker="kafka://127.0.0.1:1", store="rocksdb://",
                          datadir=str(tmp_path))
    table = fence_app.tables.add(FencedTable(fence_app, name="js", beacon=fence_app.tables.beacon,
                                             default=None, key_type=str, partitions=2))
    yield table
    for db in table.data._dbs.values():
        db.close()


def local(table, key: str = "job-1", partition: int = 1) -> Any:
    raw = table.data._db_for_partition(partition).get(json.dumps(key).encode())
    return None if raw is None else json.loads(raw)


def put_local(table, value: Any, key: str = "job-1", partition: int = 1) -> None:
    table.data._db_for_partition(partition).put(json.dumps(key).encode(), json.dumps(value).encode())


def test_position_of_values():
    assert offset_position({"offset": 7, "status": "QUEUED"}) == {"": 7}
    assert offset_position({"offsets": {"0": 3, "4": 9}, "records": []}) == {"0": 3, "4": 9}
    assert offset_position({"status": "QUEUED"}) is None
    assert offset_position({"offset": True}) is None
    assert offset_position({"offset": "7"}) is None
    assert offset_position({"offsets": {}}) is None
    assert offset_position(1) is None
    assert offset_position(None) is None


def test_older_means_dominated_and_different():
    assert is_older(incoming={"": 5}, local={"": 6})
    assert not is_older(incoming={"": 6}, local={"": 6})  # the same value again: applied
    assert not is_older(incoming={"": 7}, local={"": 6})
    assert not is_older(incoming={"": 5}, local=None)
    assert not is_older(incoming=None, local={"": 5})
    assert is_older(incoming={"0": 3}, local={"0": 3, "1": 1})  # local also saw another partition
    assert not is_older(incoming={"0": 4, "1": 0}, local={"0": 3, "1": 1})  # newer somewhere: apply


def test_an_older_changelog_value_does_not_replace_a_newer_local_one(rocksdb_table):
    """The crash case: local RUNNING@27 (its changelog record died with the worker); recovery
    re-reads QUEUED@20 and SUBMITTED@5 — both skipped, the persisted offset still advances."""
    put_local(rocksdb_table, {"offset": 27, "status": "RUNNING"})
    before = FENCED_RECORDS["js"]
    rocksdb_table.apply_changelog_batch([
        changelog_event(10, {"offset": 5, "status": "SUBMITTED"}),
        changelog_event(11, {"offset": 20, "status": "QUEUED"}),
    ])
    assert local(rocksdb_table) == {"offset": 27, "status": "RUNNING"}
    assert FENCED_RECORDS["js"] - before == 2
    assert rocksdb_table.data.persisted_offset(TP(CHANGELOG, 1)) == 11


def test_newer_and_equal_values_deletions_and_unfenced_values_apply(rocksdb_table):
    put_local(rocksdb_table, {"offset": 27, "status": "RUNNING"})
    rocksdb_table.apply_changelog_batch([changelog_event(12, {"offset": 27, "status": "RUNNING", "again": 1})])
    assert local(rocksdb_table)["again"] == 1
    rocksdb_table.apply_changelog_batch([changelog_event(13, {"offset": 30, "status": "COMPLETED"})])
    assert local(rocksdb_table) == {"offset": 30, "status": "COMPLETED"}
    rocksdb_table.apply_changelog_batch([changelog_event(14, None)])
    assert local(rocksdb_table) is None
    put_local(rocksdb_table, {"offset": 40}, key="job-2")
    rocksdb_table.apply_changelog_batch([changelog_event(15, {"no": "offset"}, key="job-2")])
    assert local(rocksdb_table, key="job-2") == {"no": "offset"}
    assert rocksdb_table.data.persisted_offset(TP(CHANGELOG, 1)) == 15


def test_records_of_one_batch_are_fenced_against_each_other(rocksdb_table):
    """An empty store rebuilt from the changelog ends on the newest value even if an older
    one follows it (a re-assertion and a stale record interleaved)."""
    rocksdb_table.apply_changelog_batch([
        changelog_event(1, {"offset": 3, "status": "QUEUED"}),
        changelog_event(2, {"offset": 9, "status": "RUNNING"}),
        changelog_event(3, {"offset": 3, "status": "QUEUED"}),
        changelog_event(4, {"offset": 2, "status": "SUBMITTED"}, key="job-2", partition=0),
    ])
    assert local(rocksdb_table) == {"offset": 9, "status": "RUNNING"}
    assert local(rocksdb_table, key="job-2", partition=0) == {"offset": 2, "status": "SUBMITTED"}


def test_an_unfenced_faust_table_goes_back_in_time(tmp_path):
    """What Faust itself does, and why the fence exists."""
    plain_app = faust.App(f"plain-{tmp_path.name}", broker="kafka://127.0.0.1:1", store="rocksdb://",
                          datadir=str(tmp_path))
    table = plain_app.Table("js", default=None, key_type=str, partitions=2)
    put_local(table, {"offset": 27, "status": "RUNNING"})
    table.apply_changelog_batch([changelog_event(11, {"offset": 20, "status": "QUEUED"})])
    assert local(table) == {"offset": 20, "status": "QUEUED"}
    for db in table.data._dbs.values():
        db.close()


def test_fence_batch_reads_local_values_once_per_key():
    reads: list[bytes] = []

    def local_value(event):  # noqa: ANN001
        reads.append(event.message.key)
        return json.dumps({"offset": 10}).encode()

    kept, skipped = fence_batch(
        [changelog_event(1, {"offset": 4}), changelog_event(2, {"offset": 11}), changelog_event(3, {"offset": 10})],
        local_value=local_value,
    )
    assert [e.message.offset for e in kept] == [2] and skipped == 2
    assert len(reads) == 1


def test_the_apps_offset_fenced_tables_are_fenced():
    from app.worker.main import app
    import agents.audit, agents.job_lifecycle, agents.job_metrics, agents.runtime_anomaly  # noqa: E401, F401
    import agents.system_health  # noqa: F401

    fenced = {name for name, table in app.tables.items() if isinstance(table, (FencedTable, FencedGlobalTable))}
    assert {"job_state", "job_counts", "active_jobs", "component_health", "job_metric_rollups",
            "metric_windows", "slow_jobs", "audit_chain_heads", "audit_by_resource", "audit_by_actor",
            "known_jobs", "runtime_stats"} <= fenced
    assert isinstance(app.tables["known_jobs"], FencedGlobalTable) and app.tables["known_jobs"].is_global
