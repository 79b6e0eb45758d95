"""track_job_lifecycle without a broker: Faust's agent test context on the memory store."""

from __future__ import annotations

import random

import pytest

from agents.job_lifecycle import derived_id, track_job_lifecycle
from app.streams import DUPLICATES_DROPPED
from app.demo import lifecycle_events
from app.main import app, codecs
from tables.job_counts import job_counts
from tables.job_state import job_state


@pytest.fixture
def memory_app(memory_registry, captured):
    assert app.conf.store.scheme == "memory"
    app.finalize()
    app.flow_control.resume()
    return captured


def _encode(event) -> bytes:  # noqa: ANN001
    return codecs.for_topic("job-lifecycle").encode(event)


async def test_a_lifecycle_is_applied_audited_and_notified(memory_app):
    events = lifecycle_events(job_id="job-9", user_id="bob", rng=random.Random(2), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        for event in events:
            await agent.put(_encode(event), key=b"job-9")
        state = job_state["job-9"]
        assert state["status"] == "COMPLETED"
        assert list(state["timestamps"]) == ["SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"]
        assert sum(job_counts["0"]["counts"].values()) == 1 and job_counts["0"]["counts"]["COMPLETED"] == 1
    audits = [e for e in memory_app["emitted"] if e.event_type == "AuditRecord"]
    notes = [e for e in memory_app["emitted"] if e.event_type == "NotificationSent"]
    assert [a.source_event_id for a in audits] == [e.event_id for e in events]
    assert [a.event_id for a in audits] == [derived_id(e.event_id, "audit") for e in events]
    assert len(notes) == 1 and notes[0].user_id == "bob" and "completed" in notes[0].title
    assert memory_app["dead"] == []


async def test_bad_events_are_dead_lettered_and_the_agent_keeps_going(memory_app):
    events = lifecycle_events(job_id="job-7", user_id="eve", rng=random.Random(3), outcome="FAILED")
    other = lifecycle_events(job_id="job-8", user_id="eve", rng=random.Random(4), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(b"definitely not avro", key=b"job-7")
        await agent.put(_encode(other[1]), key=b"job-8")  # unknown job
        for event in events:
            await agent.put(_encode(event), key=b"job-7")
        dropped = DUPLICATES_DROPPED["job-lifecycle"]
        await agent.put(_encode(events[2]), key=b"job-7")  # duplicate: dropped and counted
        assert job_state["job-7"]["status"] == "FAILED"
        assert DUPLICATES_DROPPED["job-lifecycle"] == dropped + 1
    reasons = [reason for _, reason, _ in memory_app["dead"]]
    assert reasons == ["undecodable:not-framed", "unknown-job"]
    assert memory_app["dead"][0][0].value == b"definitely not avro"  # original bytes kept


async def test_a_swapped_pair_applies_in_order_with_one_audit_each(memory_app):
    events = lifecycle_events(job_id="job-5", user_id="amy", rng=random.Random(5), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        for event in [events[0], events[2], events[1], events[3]]:
            await agent.put(_encode(event), key=b"job-5")
        assert job_state["job-5"]["status"] == "COMPLETED"
    audits = [e for e in memory_app["emitted"] if e.event_type == "AuditRecord"]
    assert sorted(a.source_event_id for a in audits) == sorted(e.event_id for e in events)
    assert memory_app["dead"] == []
