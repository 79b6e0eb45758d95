"""Gap repair (app/worker/streams.py, tables/agent_cursors.py): records Faust committed past without
delivering them are read back and handled before the record that revealed the gap."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import app.worker.offset_gaps as offset_gaps
import app.worker.streams as streams


@pytest.fixture
def handled(monkeypatch):
    seen: list[int] = []

    async def fake_handle_one(*, topic, origin, handler, dead_letter_undecodable=True, as_json=False,  # noqa: ANN001
                              copy_to_rabbitmq=False):
        seen.append(origin.offset)
        return True

    monkeypatch.setattr(streams, "handle_one", fake_handle_one)
    return seen


def origin_at(offset: int) -> streams.Origin:
    return streams.Origin(topic="p-job-lifecycle", partition=3, offset=offset, timestamp_ms=None, key=b"k", value=b"v")


async def test_a_gap_is_read_back_and_handled_in_order(monkeypatch, handled):
    reads = []

    async def fake_read_range(*, bootstrap, topic, partition, first, last, timeout=60.0):  # noqa: ANN001
        reads.append((topic, partition, first, last))
        return [SimpleNamespace(offset=o, timestamp=1_000, key=b"k", value=b"v", headers=[])
                for o in range(first, last + 1) if o != 7]  # 7: no record there (a marker)

    monkeypatch.setattr(offset_gaps, "read_range", fake_read_range)
    cursor = {"track_job_lifecycle": {"offset": 4}}
    await streams._repair_gap(cursor=cursor, agent="track_job_lifecycle", topic="job-lifecycle",
                              origin=origin_at(10), handler=None, dead_letter_undecodable=True, as_json=False)
    assert reads == [("p-job-lifecycle", 3, 5, 9)]
    assert handled == [5, 6, 8, 9]
    assert cursor["track_job_lifecycle"] == {"offset": 9}


@pytest.mark.parametrize("cursor", [
    {}, {"track_job_lifecycle": {"offset": 9}}, {"track_job_lifecycle": {"offset": 12}},
    # the key of an agent that no longer runs (its work folded into track_job_lifecycle) is not read
    {"detect_runtime_anomalies": {"offset": 2}, "track_job_lifecycle": {"offset": 9}},
    {"detect_runtime_anomalies": {"offset": 2}},
])
async def test_no_gap_no_read(monkeypatch, handled, cursor):
    async def must_not_read(**kwargs):  # noqa: ANN003
        raise AssertionError("read_range called without a gap")

    monkeypatch.setattr(offset_gaps, "read_range", must_not_read)
    await streams._repair_gap(cursor=cursor, agent="track_job_lifecycle", topic="job-lifecycle",
                              origin=origin_at(10), handler=None, dead_letter_undecodable=True, as_json=False)
    assert handled == []


async def test_an_unreadable_gap_is_retried_then_reported(monkeypatch, handled, caplog):
    calls = []

    async def failing(**kwargs):  # noqa: ANN003
        calls.append(kwargs)
        raise offset_gaps.GapReadError("broker gone")

    async def no_sleep(_delay):  # noqa: ANN001
        return None

    monkeypatch.setattr(offset_gaps, "read_range", failing)
    monkeypatch.setattr(streams.asyncio, "sleep", no_sleep)
    cursor = {"a": {"offset": 1}}
    await streams._repair_gap(cursor=cursor, agent="a", topic="job-lifecycle", origin=origin_at(10),
                              handler=None, dead_letter_undecodable=True, as_json=False)
    assert len(calls) == streams.settings.max_attempts
    assert "could not be read back" in caplog.text
    assert handled == [] and cursor == {"a": {"offset": 1}}


def test_every_topic_an_agent_reads_has_a_cursor_table():
    from app.worker.main import app
    from tables.agent_cursors import CURSOR_TOPICS, cursor_table_name
    from app.worker.table_fencing import FencedTable

    for topic in CURSOR_TOPICS:
        assert isinstance(app.tables[cursor_table_name(topic)], FencedTable)
