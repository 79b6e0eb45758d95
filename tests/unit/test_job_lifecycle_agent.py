"""track_job_lifecycle without a broker: Faust's agent test context on the memory store; both
of its sides (the lifecycle and the runtime anomalies) and how their failures combine."""

from __future__ import annotations

import dataclasses
import random

from aiokafka.errors import KafkaConnectionError

import agents.job_lifecycle
import app.worker.streams as streams
from agents.job_lifecycle import track_job_lifecycle
from app.core.ids import derived_id
from app.ops.demo import lifecycle_events
from app.worker.main import app, codecs
from app.worker.streams import DUPLICATES_DROPPED
from tables.job_counts import job_counts
from tables.job_state import job_state
from tables.known_jobs import known_jobs


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


async def test_an_event_without_a_rabbitmq_route_is_applied_and_its_copy_dead_lettered(memory_app, monkeypatch):
    import app.worker.rabbit_topology as topology

    def no_route_for_queued(event):  # noqa: ANN001, ANN202
        if event["event_type"] == "JobStatusChanged":
            raise KeyError(event["event_type"])
        return real(event)

    real = topology.route_for
    monkeypatch.setattr(topology, "route_for", no_route_for_queued)
    events = lifecycle_events(job_id="job-3", user_id="ann", rng=random.Random(2), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        for event in events:
            await agent.put(_encode(event), key=b"job-3")
        assert job_state["job-3"]["status"] == "COMPLETED"  # every event applied
    unrouted = [e for e in events if e.event_type == "JobStatusChanged"]
    assert unrouted and [e["event_id"] for e in memory_app["copied"]] == [
        e.event_id for e in events if e.event_type != "JobStatusChanged"]
    assert [reason for _, reason, _ in memory_app["dead"]] == ["not-bridged"] * len(unrouted)


async def test_active_jobs_is_written_only_when_the_set_changes(memory_app):
    """A user's active jobs change when a job enters (SUBMITTED) and leaves (a final status):
    the events between leave the key, and its fence offset, as they were (replays: the
    pipeline SIGKILL test compares the table with an uninterrupted run's)."""
    from tables.active_jobs import active_jobs

    events = lifecycle_events(job_id="job-4", user_id="ann", rng=random.Random(2), outcome="COMPLETED")
    assert [e.status_after() for e in events] == ["SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"]
    async with track_job_lifecycle.test_context() as agent:
        offsets = []
        for event in events[:3]:
            offsets.append((await agent.put(_encode(event), key=b"job-4")).message.offset)
        assert active_jobs["0/ann"] == {"offset": offsets[0], "jobs": ["job-4"]}
        await agent.put(_encode(events[3]), key=b"job-4")
        left = active_jobs["0/ann"]
        assert left["jobs"] == [] and left["offset"] > offsets[2]
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


async def test_every_decodable_event_is_copied_to_rabbitmq_in_order_whatever_was_decided(memory_app, monkeypatch):
    """The agent is job-lifecycle's only reader: it makes the RabbitMQ copies itself — applied,
    rejected and duplicate events alike, each as the JSON form its message body carries;
    an undecodable record is dead-lettered, not copied. With the bridge off, no copies."""
    from app.core.validation import event_to_json

    events = lifecycle_events(job_id="job-7", user_id="eve", rng=random.Random(3), outcome="FAILED")
    other = lifecycle_events(job_id="job-8", user_id="eve", rng=random.Random(4), outcome="COMPLETED")
    sent = [other[1], *events, events[2]]  # an unknown job's event (rejected), then a duplicate
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(b"definitely not avro", key=b"job-7")
        for event in sent:
            await agent.put(_encode(event), key=event.job_id.encode())
    assert memory_app["copied"] == [event_to_json(e) for e in sent]
    assert [reason for _, reason, _ in memory_app["dead"]] == ["undecodable:not-framed", "unknown-job"]

    memory_app["copied"].clear()
    monkeypatch.setattr(agents.job_lifecycle, "settings",
                        dataclasses.replace(agents.job_lifecycle.settings, rabbitmq_bridge_enabled=False))
    later = lifecycle_events(job_id="job-9", user_id="eve", rng=random.Random(5), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        for event in later:
            await agent.put(_encode(event), key=b"job-9")
        assert job_state["job-9"]["status"] == "COMPLETED"
    assert memory_app["copied"] == []


async def test_a_swapped_pair_applies_in_order_with_one_audit_each(memory_app):
    events = lifecycle_events(job_id="job-5", user_id="amy", rng=random.Random(5), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        for event in [events[0], events[2], events[1], events[3]]:
            await agent.put(_encode(event), key=b"job-5")
        assert job_state["job-5"]["status"] == "COMPLETED"
    audits = [e for e in memory_app["emitted"] if e.event_type == "AuditRecord"]
    assert sorted(a.source_event_id for a in audits) == sorted(e.event_id for e in events)
    assert memory_app["dead"] == []


# -- the anomaly side, run by the same agent on the same events -------------------------------
async def test_the_anomaly_side_sees_every_decodable_event_whatever_the_lifecycle_decided(memory_app):
    events = lifecycle_events(job_id="job-7", user_id="eve", rng=random.Random(3), outcome="FAILED")
    other = lifecycle_events(job_id="job-8", user_id="eve", rng=random.Random(4), outcome="COMPLETED")
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(b"definitely not avro", key=b"job-7")
        await agent.put(_encode(other[1]), key=b"job-8")  # unknown job: rejected by the lifecycle side
        for event in events:
            await agent.put(_encode(event), key=b"job-7")
        dropped = DUPLICATES_DROPPED["job-lifecycle"]
        duplicate_offset = agent.sent_offset
        await agent.put(_encode(events[2]), key=b"job-7")  # exact duplicate: dropped by the lifecycle side
        assert DUPLICATES_DROPPED["job-lifecycle"] == dropped + 1
    # dead letters as before, each record once (the undecodable one is not skipped and counted twice)
    assert [reason for _, reason, _ in memory_app["dead"]] == ["undecodable:not-framed", "unknown-job"]
    assert known_jobs.get("job-8") is None  # refused by the lifecycle (never submitted): not a known job
    assert job_state["job-7"]["status"] == known_jobs["job-7"]["status"] == "FAILED"
    # the duplicate reached the anomaly side too, and changed nothing: no write, the offset of the last change
    assert known_jobs["job-7"]["offset"] < duplicate_offset


async def test_known_jobs_holds_the_lifecycle_status_not_the_last_event_s(memory_app):
    # COMPLETED overtakes RUNNING: the lifecycle parks it, then applies RUNNING and COMPLETED in
    # that order when RUNNING arrives. The last event is the RUNNING; the job is COMPLETED.
    events = lifecycle_events(job_id="job-1", user_id="amy", rng=random.Random(11), outcome="COMPLETED")
    assert [e.status_after() for e in events] == ["SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"]
    async with track_job_lifecycle.test_context() as agent:
        for event in [events[0], events[1], events[3], events[2]]:
            await agent.put(_encode(event), key=b"job-1")
        assert job_state["job-1"]["status"] == "COMPLETED"
        known = known_jobs["job-1"]
    assert known["status"] == "COMPLETED" and known["user_id"] == "amy"
    assert known["job_type"] == events[0].job_type and known["cluster"] == events[0].tacc_system
    assert known["running_since_ms"] == job_state["job-1"]["timestamps"]["RUNNING"]
    assert known["completed"]["event_id"] == events[3].event_id  # judged, as the lifecycle accepted it


async def test_a_refused_completion_is_not_judged(memory_app):
    # A JobCompleted after the job was cancelled is rejected by the lifecycle: the anomaly side
    # neither records it as the job's completion nor learns its runtime.
    events = lifecycle_events(job_id="job-2", user_id="amy", rng=random.Random(11), outcome="COMPLETED")
    cancelled = lifecycle_events(job_id="job-2", user_id="amy", rng=random.Random(12), outcome="CANCELLED")[-1]
    assert cancelled.status_after() == "CANCELLED"
    async with track_job_lifecycle.test_context() as agent:
        for event in [*events[:3], cancelled, events[3]]:
            await agent.put(_encode(event), key=b"job-2")
        assert job_state["job-2"]["status"] == "CANCELLED"
    assert [reason for _, reason, _ in memory_app["dead"]] == ["invalid-transition"]
    assert known_jobs["job-2"]["status"] == "CANCELLED" and known_jobs["job-2"]["completed"] is None


def _anomaly_side_failing(monkeypatch, *, event_id: str, errors: list[BaseException]) -> list[str]:
    """Make the anomaly side raise ``errors`` (one per attempt) on ``event_id``; the calls."""
    real = agents.job_lifecycle.handle_anomalies
    calls: list[str] = []

    async def flaky(event, origin):  # noqa: ANN001, ANN202
        calls.append(event.event_id)
        if event.event_id == event_id and errors:
            raise errors.pop(0)
        await real(event, origin)

    monkeypatch.setattr(agents.job_lifecycle, "handle_anomalies", flaky)
    monkeypatch.setattr(streams, "backoff_delay", lambda attempt: 0.0)
    return calls


async def test_a_failing_anomaly_side_is_dead_lettered_and_the_lifecycle_effects_stay_once(memory_app, monkeypatch):
    events = lifecycle_events(job_id="job-6", user_id="bob", rng=random.Random(6), outcome="COMPLETED")
    calls = _anomaly_side_failing(monkeypatch, event_id=events[1].event_id, errors=[ZeroDivisionError("bug")])
    async with track_job_lifecycle.test_context() as agent:
        offsets = []
        for event in events:
            offsets.append(agent.sent_offset)  # the offset this put gets
            await agent.put(_encode(event), key=b"job-6")
        assert job_state["job-6"]["status"] == "COMPLETED"
    # dead-lettered as process_events does it (reason "error", one attempt), and consuming went on
    assert [(origin.offset, reason, attempts) for origin, reason, attempts in memory_app["dead"]] == [
        (offsets[1], "error", 1)
    ]
    assert calls == [e.event_id for e in events]
    # the failed event's lifecycle effects are there, once: not lost, not re-applied
    audits = [e for e in memory_app["emitted"] if e.event_type == "AuditRecord"]
    assert [a.event_id for a in audits] == [derived_id(e.event_id, "audit") for e in events]
    assert list(job_state["job-6"]["timestamps"]) == ["SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"]
    assert known_jobs["job-6"]["status"] == "COMPLETED" and known_jobs["job-6"]["offset"] == offsets[-1]


async def test_a_rejection_keeps_its_reason_when_the_anomaly_side_fails_too(memory_app, monkeypatch):
    orphan = lifecycle_events(job_id="job-2", user_id="bob", rng=random.Random(9), outcome="COMPLETED")[1]
    _anomaly_side_failing(monkeypatch, event_id=orphan.event_id, errors=[ZeroDivisionError("bug")])
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(_encode(orphan), key=b"job-2")  # never submitted: the lifecycle side rejects it
    # each side's failure dead-lettered once, as by the two agents before: the anomaly side's
    # as "error", the lifecycle's with its own reason (not replaced by the other)
    assert [reason for _, reason, _ in memory_app["dead"]] == ["error", "unknown-job"]


async def test_kafka_down_in_the_anomaly_side_retries_that_side_only(memory_app, monkeypatch):
    events = lifecycle_events(job_id="job-4", user_id="bob", rng=random.Random(7), outcome="COMPLETED")
    waits = streams.KAFKA_WAITS["job-lifecycle"]
    calls = _anomaly_side_failing(monkeypatch, event_id=events[2].event_id,
                                  errors=[KafkaConnectionError(), KafkaConnectionError()])
    replays = agents.job_lifecycle.IDEMPOTENCY_HITS["replay"]
    async with track_job_lifecycle.test_context() as agent:
        for event in events:
            await agent.put(_encode(event), key=b"job-4")
    assert memory_app["dead"] == []
    assert streams.KAFKA_WAITS["job-lifecycle"] == waits + 2
    assert calls.count(events[2].event_id) == 3
    assert agents.job_lifecycle.IDEMPOTENCY_HITS["replay"] == replays  # the lifecycle side ran once per event
    audits = [e for e in memory_app["emitted"] if e.event_type == "AuditRecord"]
    assert [a.event_id for a in audits] == [derived_id(e.event_id, "audit") for e in events]
    assert known_jobs["job-4"]["status"] == "COMPLETED"


async def test_a_failing_lifecycle_side_still_runs_the_anomaly_side(memory_app, monkeypatch):
    events = lifecycle_events(job_id="job-3", user_id="bob", rng=random.Random(8), outcome="COMPLETED")
    real = agents.job_lifecycle.handle_job_event

    async def broken_on_the_first(event, origin):  # noqa: ANN001, ANN202
        if event.event_id == events[0].event_id:
            raise KeyError("bug")
        await real(event, origin)

    monkeypatch.setattr(agents.job_lifecycle, "handle_job_event", broken_on_the_first)
    async with track_job_lifecycle.test_context() as agent:
        await agent.put(_encode(events[0]), key=b"job-3")
    assert [reason for _, reason, _ in memory_app["dead"]] == ["error"]  # once, for the lifecycle side
    assert job_state.get("job-3") is None
    assert known_jobs.get("job-3") is None  # the lifecycle never applied its JobSubmitted: not known
