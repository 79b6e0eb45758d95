"""The first slice without a broker: Faust's agent test context on the memory store."""

import random

import pytest

from agents.job_lifecycle import apply_event, track_job_lifecycle
from app.codecs import utc_ms
from app.demo import lifecycle_events
from app.main import app
from tables.job_state import job_state


def test_apply_event_tracks_status_timestamps_and_last_event():
    events = lifecycle_events(job_id="job-1", user_id="alice", rng=random.Random(1), outcome="COMPLETED")
    state = None
    for event in events[:3]:
        state = apply_event(state=state, event=event)
    assert state["status"] == "RUNNING"
    assert state["timestamps"] == {
        "SUBMITTED": utc_ms(events[0].timestamp),
        "QUEUED": utc_ms(events[1].timestamp),
        "RUNNING": utc_ms(events[2].timestamp),
    }
    assert state["last_event_id"] == events[2].event_id
    assert state["events"] == 3
    assert state["user_id"] == "alice"


@pytest.fixture
def memory_app():
    assert app.conf.store.scheme == "memory"
    app.finalize()
    app.flow_control.resume()
    return app


async def test_agent_updates_the_table(memory_app):
    events = lifecycle_events(job_id="job-9", user_id="bob", rng=random.Random(2), outcome="FAILED")
    async with track_job_lifecycle.test_context() as agent:
        for event in events:
            await agent.put(event, key="job-9")
        assert job_state["job-9"]["status"] == "FAILED"
        assert job_state["job-9"]["events"] == 4
        assert list(agent.results.values()) == [e.event_id for e in events]
