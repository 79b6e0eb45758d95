"""The first slice without a broker: Faust's agent test context on the memory store."""

import pytest

from agents.job_lifecycle import apply_event, track_job_lifecycle
from app.main import app
from app.models import JobLifecycleEvent
from tables.job_state import job_state


def _event(n: int, event_type: str, *, job_id: str = "job-1", new_status: str = "") -> JobLifecycleEvent:
    return JobLifecycleEvent(
        event_id=f"e{n}", event_type=event_type, job_id=job_id, timestamp=1_000 * n,
        user_id="alice", correlation_id="c-1", new_status=new_status,
    )


def test_apply_event_tracks_status_timestamps_and_last_event():
    state = apply_event(state=None, event=_event(1, "JobSubmitted"))
    state = apply_event(state=state, event=_event(2, "JobQueued"))
    state = apply_event(state=state, event=_event(3, "JobStatusChanged", new_status="RUNNING"))
    assert state["status"] == "RUNNING"
    assert state["timestamps"] == {"SUBMITTED": 1000, "QUEUED": 2000, "RUNNING": 3000}
    assert state["last_event_id"] == "e3"
    assert state["events"] == 3
    assert state["user_id"] == "alice"


@pytest.fixture
def memory_app():
    assert app.conf.store.scheme == "memory"
    app.finalize()
    app.flow_control.resume()
    return app


async def test_agent_updates_the_table(memory_app):
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(_event(1, "JobSubmitted", job_id="job-9"), key="job-9")
        await agent.put(_event(2, "JobQueued", job_id="job-9"), key="job-9")
        await agent.put(_event(3, "JobCompleted", job_id="job-9"), key="job-9")
        assert job_state["job-9"]["status"] == "COMPLETED"
        assert job_state["job-9"]["events"] == 3
        assert list(agent.results.values()) == ["e1", "e2", "e3"]
