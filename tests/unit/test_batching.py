"""Batches (app.worker.batching): table writes coalesced per key, sends awaited once, confirmations windowed."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError
from faust.streams import current_event
from faust.types import TP

from app.worker.batching import Batch, active_batch
from app.worker.faust_internals import set_current_event
from app.worker.main import app
from tables.job_counts import job_counts
from tables.job_state import job_state


def _NO_WAIT(attempt: int) -> float:
    return 0.0


class _Event:
    """What Faust's current event offers the tables: its message's partition."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


_KEEP: list[_Event] = []  # the current event is held by weak reference


def _event(partition: int) -> _Event:
    _KEEP.append(_Event(partition))
    return _KEEP[-1]


class FakeProducer:
    """Counts what a batch hands over; ``fail`` futures of the first sends end in an error.
    Acknowledged records get offsets 0, 1, 2 … per (topic, partition)."""

    def __init__(self, *, fail: int = 0) -> None:
        self.sent: list[tuple] = []
        self.resent: list[tuple] = []
        self.fail = fail
        self.offsets: dict[tuple, int] = {}

    def _metadata(self, topic, partition):  # noqa: ANN001, ANN202
        offset = self.offsets.get((topic, partition), -1) + 1
        self.offsets[(topic, partition)] = offset
        return SimpleNamespace(topic=topic, partition=partition, offset=offset)

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        self.sent.append((topic, key, value, partition))
        future = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(KafkaConnectionError())
        else:
            future.set_result(self._metadata(topic, partition))
        return future

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        self.resent.append((topic, key, value))
        return self._metadata(topic, partition)

    def changelog(self) -> list[tuple[str, object, int, object]]:
        """(table, key, partition, value or None) of every changelog record sent."""
        prefix = f"{app.conf.id}-"
        return [(topic[len(prefix):-len("-changelog")], json.loads(key), partition,
                 None if value is None else json.loads(value))
                for topic, key, value, partition in self.sent if topic.endswith("-changelog")]


@pytest.fixture
def tables(monkeypatch):
    """The real memory-store tables, emptied; persisted offsets recorded per table and partition."""
    app.finalize()
    persisted: dict[tuple[str, int], int] = {}
    for table in (job_state, job_counts):
        table.data.clear()
        monkeypatch.setattr(table.data, "set_persisted_offset",
                            lambda tp, offset, _name=table.name: persisted.__setitem__((_name, tp.partition), offset))
    yield persisted
    set_current_event(None)


@pytest.fixture
def faust_changelog(monkeypatch, tables):
    """Record the changelog records Faust's own per-write path sends (writes outside a batch)."""
    sent: list[tuple[str, object, int]] = []
    for table in (job_state, job_counts):
        def record(partition, key, value, *args, _table=table, **kwargs):  # noqa: ANN001, ANN202
            sent.append((_table.name, key, partition))
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        monkeypatch.setattr(table, "send_changelog", record)
        monkeypatch.setattr(table, "partition_for_key", lambda key: current_event().message.partition)
    return sent


async def test_a_key_written_by_many_events_is_written_once_with_the_last_value(tables, faust_changelog):
    producer = FakeProducer()
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        for i in range(100):
            set_current_event(_event(i % 2))
            job_counts[str(i % 2)] = {"offset": i, "counts": {}}
            assert job_counts[str(i % 2)]["offset"] == i  # the handler sees its own write
        assert producer.sent == [] and dict(job_counts.data) == {}  # nothing written yet
        await batch.finish()
    assert faust_changelog == []  # not Faust's per-write path
    assert sorted(producer.changelog()) == [("job_counts", "0", 0, {"offset": 98, "counts": {}}),
                                            ("job_counts", "1", 1, {"offset": 99, "counts": {}})]
    assert job_counts["0"]["offset"] == 98 and job_counts["1"]["offset"] == 99
    assert batch.table_writes == 100 and batch.flushed_keys == 2


async def test_store_writes_happen_at_flush_and_persisted_offsets_once_acknowledged(tables):
    producer = FakeProducer(fail=1)  # the first changelog record is sent again
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        for i in range(6):
            set_current_event(_event(i % 3))
            job_state[f"j-{i}"] = {"offset": i}
        batch.flush()
        assert {k: v["offset"] for k, v in job_state.data.items()} == {f"j-{i}": i for i in range(6)}
        assert tables == {}  # nothing acknowledged yet
        await batch.finish()
    assert len(producer.resent) == 1
    # two records per partition; the highest acknowledged changelog offset of each is recorded
    assert tables == {("job_state", 0): 1, ("job_state", 1): 1, ("job_state", 2): 1}


class BatchingProducer(FakeProducer):
    """Faust's running producer as :func:`changelog.batch_client` finds it: under it an aiokafka
    producer (never started: it only builds record batches, ``max_batch_size`` bytes at most)
    whose ``send_batch`` is recorded; the first ``fail_batches`` batches end in an error."""

    started = True

    def __init__(self, *, max_batch_size: int, fail_batches: int = 0) -> None:
        from aiokafka import AIOKafkaProducer

        super().__init__()
        self.kafka = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=max_batch_size)
        self.batches: list[tuple[str, int, list[bytes]]] = []
        self.fail_batches = fail_batches

    def _ensure_producer(self):  # noqa: ANN202 - Faust's accessor of its aiokafka producer
        return self

    def create_batch(self):  # noqa: ANN202
        return self.kafka.create_batch()

    async def send_batch(self, builder, topic, *, partition):  # noqa: ANN001, ANN201
        from aiokafka.record.default_records import DefaultRecordBatch

        builder.close()
        records = list(DefaultRecordBatch(bytes(builder._builder.build())))
        self.batches.append((topic, partition, [json.loads(r.key) for r in records]))
        future = asyncio.get_running_loop().create_future()
        if self.fail_batches:
            self.fail_batches -= 1
            future.set_exception(KafkaConnectionError())
            return future
        base = self._metadata(topic, partition).offset
        self.offsets[(topic, partition)] = base + len(records) - 1
        future.set_result(SimpleNamespace(topic=topic, partition=partition, offset=base))
        return future


async def test_changelog_records_go_out_as_one_record_batch_per_partition(tables):
    """A running producer gets a batch's changelog records as Kafka record batches, one per
    changelog partition in order (a full one is sent and another begun), not one ``send``
    each; each partition's persisted offset is its last record's (base offset + count - 1)."""
    producer = BatchingProducer(max_batch_size=400)
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        for i in range(12):
            set_current_event(_event(i % 3))
            job_state[f"j-{i}"] = {"offset": i, "note": "x" * 60}
        await batch.finish()
    assert producer.sent == [] and producer.resent == []
    keys = {}
    for topic, partition, batch_keys in producer.batches:
        assert topic.endswith("job_state-changelog")
        keys.setdefault(partition, []).append(batch_keys)
    assert {p: sum(k, []) for p, k in keys.items()} == {p: [f"j-{i}" for i in range(p, 12, 3)] for p in range(3)}
    assert max(len(k) for k in keys.values()) > 1  # 400 bytes hold fewer than four records
    assert tables == {("job_state", p): 3 for p in range(3)}  # four records each: offsets 0..3
    assert {k: v["offset"] for k, v in job_state.data.items()} == {f"j-{i}": i for i in range(12)}


async def test_a_record_batch_kafka_refused_is_sent_again_record_by_record(tables):
    producer = BatchingProducer(max_batch_size=16384, fail_batches=1)
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        for i in range(4):
            set_current_event(_event(i % 2))
            job_state[f"j-{i}"] = {"offset": i}
        await batch.finish()
    assert [p for _, p, _ in producer.batches] == [0, 1]
    assert sorted(json.loads(key) for _, key, _ in producer.resent) == ["j-0", "j-2"]  # partition 0's, alone
    assert tables == {("job_state", 0): 1, ("job_state", 1): 1}


async def test_reads_contains_and_deletes_go_through_the_overlay(tables, faust_changelog):
    set_current_event(_event(3))
    job_state["j-1"] = {"offset": 1}  # outside a batch: Faust's own path, at once
    assert faust_changelog == [("job_state", "j-1", 3)]
    producer = FakeProducer()
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        set_current_event(_event(3))
        assert "j-1" in job_state
        del job_state["j-1"]
        assert "j-1" not in job_state and job_state.get("j-1") is None
        with pytest.raises(KeyError):
            del job_state["j-1"]
        job_state["j-2"] = {"offset": 2}
        del job_state["j-2"]  # written and deleted in one batch: nothing to store
        await batch.finish()
    assert "j-1" not in job_state.data and "j-2" not in job_state.data
    assert producer.changelog() == [("job_state", "j-1", 3, None)]  # the deletion's tombstone only
    assert active_batch() is None


async def test_the_same_key_in_two_partitions_is_two_values(tables):
    producer = FakeProducer()
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    with batch.active():
        for offset in range(10):
            for partition in (0, 1):
                set_current_event(_event(partition))
                job_counts["agent"] = {"offset": offset * 10 + partition}
        set_current_event(_event(0))
        assert job_counts["agent"]["offset"] == 90
        set_current_event(_event(1))
        assert job_counts["agent"]["offset"] == 91
        await batch.finish()
    assert sorted(producer.changelog()) == [("job_counts", "agent", 0, {"offset": 90}),
                                            ("job_counts", "agent", 1, {"offset": 91})]


def test_without_a_running_producer_flush_takes_fausts_own_path(tables, faust_changelog):
    batch = Batch(producer=FakeProducer(), backoff=_NO_WAIT, direct_changelog=False)
    with batch.active():
        for i in range(4):
            set_current_event(_event(i % 2))
            job_counts[str(i % 2)] = {"offset": i}
        batch.flush()
    assert sorted(faust_changelog) == [("job_counts", "0", 0), ("job_counts", "1", 1)]
    assert job_counts["0"]["offset"] == 2 and job_counts["1"]["offset"] == 3


def test_a_write_outside_any_event_is_refused(tables):
    set_current_event(None)
    with Batch(producer=FakeProducer(), backoff=_NO_WAIT).active(), pytest.raises(RuntimeError):
        job_state["j-3"] = {"offset": 1}


async def test_sends_are_awaited_once_and_unacknowledged_ones_sent_again():
    producer = FakeProducer(fail=2)
    acked: list[int] = []
    batch = Batch(producer=producer, backoff=_NO_WAIT)
    for i in range(5):
        await batch.send(topic="t", key=b"k", value=str(i).encode(), partition=None, timestamp=None,
                         headers=[], on_acked=lambda i=i: acked.append(i))
    await batch.finish()
    assert len(producer.sent) == 5
    assert producer.resent == [("t", b"k", b"0"), ("t", b"k", b"1")]
    assert acked == [0, 1, 2, 3, 4]


async def test_deferred_confirmations_run_with_at_most_the_window_in_flight():
    in_flight = peak = 0
    done: list[int] = []

    async def confirm(i: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        done.append(i)

    batch = Batch(producer=FakeProducer(), backoff=_NO_WAIT, window=8)
    for i in range(50):
        batch.defer(lambda i=i: confirm(i))
    await batch.finish()
    assert sorted(done) == list(range(50)) and peak == 8


class _HeldProducer(FakeProducer):
    """Every send's acknowledgement is the one future ``ack``, resolved by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.ack = asyncio.get_running_loop().create_future()

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        self.sent.append((topic, key, value, partition))
        return self.ack


async def test_deferred_confirmations_run_while_the_sends_are_awaited():
    producer = _HeldProducer()
    confirmed: list[str] = []

    async def confirm() -> None:
        # Kafka acknowledges only once the copy is out: waited for one after the other, the
        # batch would never finish.
        confirmed.append("copy")
        producer.ack.set_result(SimpleNamespace(offset=0))

    batch = Batch(producer=producer, backoff=_NO_WAIT)
    await batch.send(topic="t", key=b"k", value=b"v", partition=None, timestamp=None, headers=[])
    batch.defer(confirm)
    await asyncio.wait_for(batch.finish(), 5)
    assert confirmed == ["copy"]


async def test_a_failed_confirmation_fails_the_batch_once_its_sends_are_acknowledged():
    producer = FakeProducer()

    async def refused() -> None:
        raise RuntimeError("nacked")

    batch = Batch(producer=producer, backoff=_NO_WAIT)
    await batch.send(topic="t", key=b"k", value=b"v", partition=None, timestamp=None, headers=[])
    batch.defer(refused)
    with pytest.raises(RuntimeError, match="nacked"):
        await batch.finish()
    assert len(producer.sent) == 1


async def test_a_cancelled_finish_cancels_its_confirmations():
    producer = _HeldProducer()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def confirm() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    batch = Batch(producer=producer, backoff=_NO_WAIT)
    await batch.send(topic="t", key=b"k", value=b"v", partition=None, timestamp=None, headers=[])
    batch.defer(confirm)
    finishing = asyncio.ensure_future(batch.finish())
    await asyncio.wait_for(started.wait(), 5)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert cancelled.is_set()


def test_a_rocksdb_store_gets_the_changelog_records_bytes_and_reads_them_back(tmp_path):
    import faust

    from app.worker.faust_internals import changelog

    rocks = faust.App("cosmic-unit-rocks", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = rocks.Table("things", partitions=2)
    rocks.finalize()
    set_current_event(_event(1))
    try:
        record = changelog.write_local(table=table, key="k", value={"offset": 7, "history": [1, 2]},
                                       deleted=False, partition=1)
        assert record is not None and record.partition == 1 and record.topic == "cosmic-unit-rocks-things-changelog"
        assert json.loads(record.key) == "k" and json.loads(record.value) == {"offset": 7, "history": [1, 2]}
        assert table.data["k"] == {"offset": 7, "history": [1, 2]}  # Faust's own decoding reads it
        deletion = changelog.write_local(table=table, key="k", value=None, deleted=True, partition=1)
        assert deletion is not None and deletion.value is None and "k" not in table.data
        assert changelog.write_local(table=table, key="k", value=None, deleted=True, partition=1) is None
    finally:
        set_current_event(None)


def test_reads_in_a_batch_take_one_store_lookup_and_equal_fausts_own(tmp_path):
    import faust

    from app.worker.batching import coalescing_table
    from app.worker.faust_internals import changelog

    rocks = faust.App("cosmic-unit-rocks-read", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = coalescing_table(rocks, "things", partitions=2, default=None)
    rocks.finalize()
    value = {"offset": 7, "history": [{"a": 1.5, "b": None}], "name": "é ✓", "big": 2**62}
    set_current_event(_event(1))
    try:
        changelog.write_local(table=table, key="k", value=value, deleted=False, partition=1)
        changelog.write_local(table=table, key="null", value=None, deleted=False, partition=1)
        assert changelog.read_local(table=table, key="k", partition=1) == value == table.data["k"]
        assert changelog.read_local(table=table, key="k", partition=0) is changelog.ABSENT
        assert changelog.read_local(table=table, key="nothing", partition=1) is changelog.ABSENT
        assert changelog.read_local(table=table, key=("k", 1), partition=1) is changelog.UNSUPPORTED
        lookups = []
        db = table.data._db_for_partition(1)
        with Batch(producer=None, backoff=lambda n: 0.0).active():
            table.data._dbs[1] = SimpleNamespace(get=lambda raw: lookups.append(raw) or db.get(raw))
            try:
                assert table["k"] == value and table.get("k") == value and "k" in table
                assert table.get("nothing") is None and "nothing" not in table
                assert table["null"] is None and "null" in table  # a stored JSON null is a value
            finally:
                table.data._dbs[1] = db
        assert len(lookups) == 7  # one per read: Faust's path asks twice
        set_current_event(_event(0))
        with Batch(producer=None, backoff=lambda n: 0.0).active():
            assert table.get("k") is None and "k" not in table  # another partition's store
    finally:
        set_current_event(None)
    memory_table = job_state  # a memory store: Faust's own path, through the overlay as before
    assert changelog.read_local(table=memory_table, key="k", partition=0) is changelog.UNSUPPORTED


def test_a_flush_writes_each_rocksdb_partition_once_with_every_key(tmp_path):
    import faust

    from app.worker.batching import coalescing_table
    from app.worker.faust_internals import changelog

    rocks = faust.App("cosmic-unit-rocks-flush", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = coalescing_table(rocks, "things", partitions=2, default=None)
    rocks.finalize()
    writes = changelog.StoreWrites()
    set_current_event(_event(1))
    try:
        record = changelog.write_local(table=table, key="k", value={"n": 1}, deleted=False, partition=1, writes=writes)
        assert record is not None and json.loads(record.value) == {"n": 1}
        assert "k" not in table.data  # waits for the commit
        writes.commit()
        assert table.data["k"] == {"n": 1}

        class Producer:
            started = True
        batch = Batch(producer=Producer(), backoff=lambda n: 0.0)
        dbs = {p: table.data._db_for_partition(p) for p in (0, 1)}
        written: list[int] = []
        for p, db in dbs.items():
            table.data._dbs[p] = SimpleNamespace(
                get=db.get, write=lambda wb, _p=p, _db=db: written.append(_p) or _db.write(wb))
        try:
            with batch.active():
                for n in range(6):
                    set_current_event(_event(n % 2))
                    table[f"key-{n}"] = {"n": n}
                    table["k"] = {"n": 10 + n}
                batch.flush()
        finally:
            table.data._dbs.update(dbs)
        assert sorted(written) == [0, 1]  # one write per partition's database
        assert len(batch._changelog) == 8  # six keys, and "k" once in each partition
        for n in range(6):
            set_current_event(_event(n % 2))
            assert table.data[f"key-{n}"] == {"n": n}
        assert table.data["k"] == {"n": 15}  # partition 1's last write
        set_current_event(_event(0))
        assert table.data["k"] == {"n": 14}
    finally:
        set_current_event(None)


def test_a_rocksdb_store_gets_an_acknowledged_offset_with_its_partition_s_next_batch_of_puts(tmp_path):
    """The persisted offset (where recovery starts reading the changelog) is written in the
    same RocksDB write as that partition's next data, never ahead of the data it covers; a
    revoked partition forgets it."""
    import faust

    from app.worker.batching import coalescing_table
    from app.worker.faust_internals import changelog

    rocks = faust.App("cosmic-unit-rocks-offsets", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = coalescing_table(rocks, "things", partitions=2, default=None)
    rocks.finalize()
    store, topic = table.data, table.changelog_topic.get_topic_name()
    set_current_event(_event(1))
    try:
        def write(key: str, partition: int) -> None:
            writes = changelog.StoreWrites()
            changelog.write_local(table=table, key=key, value={"k": key}, deleted=False, partition=partition,
                                  writes=writes)
            writes.commit()

        write("first", 1)
        changelog.record_persisted({(id(table), topic, 1): (table, 41)})  # its changelog record acknowledged
        assert store.persisted_offset(TP(topic, 1)) is None  # not a write of its own
        write("other", 0)
        assert store.persisted_offset(TP(topic, 0)) is None and store.persisted_offset(TP(topic, 1)) is None
        write("second", 1)  # the partition's next batch of puts carries it
        assert store.persisted_offset(TP(topic, 1)) == 41
        assert store._db_for_partition(1).get(json.dumps("second").encode()) is not None
        changelog.record_persisted({(id(table), topic, 1): (table, 42)})
        changelog.forget_offsets(store=store, partitions={1})  # revoked
        write("third", 1)
        assert store.persisted_offset(TP(topic, 1)) == 41
    finally:
        set_current_event(None)


def test_plain_json_tables_get_the_bytes_fausts_serializers_produce():
    import importlib
    import pkgutil

    import tables as table_modules
    from app.worker.faust_internals import changelog

    for module in pkgutil.iter_modules(table_modules.__path__):
        importlib.import_module(f"tables.{module.name}")
    app.finalize()
    values = [{"offset": 7, "history": [{"a": 1.5, "b": None}], "name": "é ✓", "big": 2**62, "flag": True},
              [], {}, 0, "text", None]
    tested = 0
    for table in app.tables.values():
        if not changelog._plain_json(table):
            continue
        topic = table.changelog_topic
        for key in ("job-1", "0:000000000001", "é"):
            assert json.loads(topic.prepare_key(key, table.key_serializer)[0]) == key
            for value in values:
                expected = topic.prepare_value(value, table.value_serializer)[0]
                assert changelog.json.dumps(value) == expected, (table.name, value)
            assert changelog.json.dumps(key) == topic.prepare_key(key, table.key_serializer)[0], table.name
        tested += 1
    assert tested >= 10  # job_state, audit tables, cursors, …


def test_global_table_reads_in_a_batch_equal_fausts_own(tmp_path):
    """A global table's key lives in the store of the partition that wrote it: a read in a
    batch finds it from any event's partition, as Faust's ``Store._get`` does (its key index,
    else every open partition), with one key encoding and no second lookup."""
    import faust

    from app.worker.faust_internals import changelog
    from app.worker.table_fencing import fenced_global_table

    rocks = faust.App("cosmic-unit-rocks-global", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    table = fenced_global_table(rocks, "known", partitions=3, default=None, key_type=str)
    rocks.finalize()
    writes = changelog.StoreWrites()
    values = {"a": {"p": 0}, "b": {"p": 2, "list": [1, None, "é"]}, "c": None}
    set_current_event(_event(0))
    try:
        for key, partition in (("a", 0), ("b", 2), ("c", 1)):
            changelog.write_local(table=table, key=key, value=values[key], deleted=False, partition=partition,
                                  writes=writes)
        writes.commit()
        table.data._key_index.clear()  # found by asking every partition, then indexed
        for event_partition in (0, 1, 2):
            set_current_event(_event(event_partition))
            for key, value in values.items():
                assert changelog.read_local(table=table, key=key, partition=event_partition) == value
                assert table.data[key] == value  # Faust's own read agrees
            assert changelog.read_local(table=table, key="nothing", partition=event_partition) is changelog.ABSENT
            with Batch(producer=None, backoff=lambda n: 0.0).active():
                assert table["b"] == values["b"] and "c" in table and table["c"] is None
                assert table.get("nothing") is None and "nothing" not in table
        assert table.data._key_index[json.dumps("b").encode()] == 2
    finally:
        set_current_event(None)
