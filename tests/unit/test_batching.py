"""Batches (app.batching): table writes coalesced per key, sends awaited once, confirmations windowed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError
from faust.streams import current_event

from app.batching import Batch, active_batch, set_current_event
from app.main import app
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
    """Counts what a batch hands over; ``fail`` futures of the first sends end in an error."""

    def __init__(self, *, fail: int = 0) -> None:
        self.sent: list[tuple] = []
        self.resent: list[tuple] = []
        self.fail = fail

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(KafkaConnectionError())
        else:
            future.set_result(None)
        return future

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        self.resent.append((topic, key, value))


@pytest.fixture
def changelog(monkeypatch):
    """Record every changelog record the tables send (the real memory-store tables)."""
    app.finalize()
    sent: list[tuple[str, object, int]] = []
    for table in (job_state, job_counts):
        table.data.clear()

        def record(partition, key, value, *args, _table=table, **kwargs):  # noqa: ANN001, ANN202
            sent.append((_table.name, key, partition))
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        monkeypatch.setattr(table, "send_changelog", record)
        monkeypatch.setattr(table, "partition_for_key", lambda key: current_event().message.partition)
    yield sent
    set_current_event(None)


def test_a_key_written_by_many_events_is_written_once_with_the_last_value(changelog):
    batch = Batch(producer=FakeProducer(), backoff=_NO_WAIT)
    with batch.active():
        for i in range(100):
            set_current_event(_event(i % 2))
            job_counts[str(i % 2)] = {"offset": i, "counts": {}}
            assert job_counts[str(i % 2)]["offset"] == i  # the handler sees its own write
        assert changelog == [] and dict(job_counts.data) == {}  # nothing written yet
        batch.flush()
    assert sorted(changelog) == [("job_counts", "0", 0), ("job_counts", "1", 1)]
    assert job_counts["0"]["offset"] == 98 and job_counts["1"]["offset"] == 99
    assert batch.table_writes == 100 and batch.flushed_keys == 2


def test_reads_contains_and_deletes_go_through_the_overlay(changelog):
    set_current_event(_event(3))
    job_state["j-1"] = {"offset": 1}  # outside a batch: Faust's own path, at once
    assert changelog == [("job_state", "j-1", 3)]
    batch = Batch(producer=FakeProducer(), backoff=_NO_WAIT)
    with batch.active():
        set_current_event(_event(3))
        assert "j-1" in job_state
        del job_state["j-1"]
        assert "j-1" not in job_state and job_state.get("j-1") is None
        with pytest.raises(KeyError):
            del job_state["j-1"]
        job_state["j-2"] = {"offset": 2}
        del job_state["j-2"]  # written and deleted in one batch: nothing to store
        batch.flush()
    assert "j-1" not in job_state.data and "j-2" not in job_state.data
    assert changelog[1:] == [("job_state", "j-1", 3)]  # the deletion's tombstone only
    assert active_batch() is None


def test_the_same_key_in_two_partitions_is_two_values(changelog):
    batch = Batch(producer=FakeProducer(), backoff=_NO_WAIT)
    with batch.active():
        for offset in range(10):
            for partition in (0, 1):
                set_current_event(_event(partition))
                job_counts["agent"] = {"offset": offset * 10 + partition}
        set_current_event(_event(0))
        assert job_counts["agent"]["offset"] == 90
        set_current_event(_event(1))
        assert job_counts["agent"]["offset"] == 91
        batch.flush()
    assert sorted(changelog) == [("job_counts", "agent", 0), ("job_counts", "agent", 1)]


def test_a_write_outside_any_event_is_refused(changelog):
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
