"""The job state machine and its out-of-order rule, as pure functions."""

from __future__ import annotations

import itertools
import random

import pytest

from app.core.models import JobFailed, JobQueued, JobStatusChanged
from app.core.state_machine import MAX_PARKED, decide, is_terminal
from app.core.timeutil import utc_ms
from app.ops.demo import lifecycle_events

MAX_RETRIES = 3


class Harness:
    """Feeds events through ``decide`` like the agent does (parked events kept by identity)."""

    def __init__(self) -> None:
        self.state = None
        self.applied: list[tuple[str | None, str]] = []
        self.rejected: list[tuple[str, str]] = []
        self.events: dict[str, object] = {}
        self.seq = itertools.count()

    def feed(self, event) -> None:  # noqa: ANN001
        self.events[event.event_id] = event
        entry = {"event_id": event.event_id, "at_ms": utc_ms(event.timestamp), "seq": next(self.seq)}
        outcome = decide(
            state=self.state, event=event, at_ms=entry["at_ms"], parked_entry=entry,
            decode_parked=lambda e: (self.events[e["event_id"]], e["at_ms"]), max_retries=MAX_RETRIES,
        )
        self.state = outcome.state
        self.applied += [(t.from_status, t.to_status) for t in outcome.transitions]
        self.rejected += [(e["event_id"], reason) for e, reason, _ in outcome.rejected]


def _job(outcome: str, seed: int = 0):
    return lifecycle_events(job_id="j", user_id="u", rng=random.Random(seed), outcome=outcome)


@pytest.mark.parametrize("outcome", ["COMPLETED", "FAILED", "CANCELLED"])
def test_in_order_lifecycles_apply_every_transition(outcome):
    h = Harness()
    for event in _job(outcome):
        h.feed(event)
    assert h.state["status"] == outcome
    assert h.applied[:3] == [(None, "SUBMITTED"), ("SUBMITTED", "QUEUED"), ("QUEUED", "RUNNING")]
    assert h.rejected == []


def test_a_swapped_pair_is_applied_in_logical_order():
    events = _job("COMPLETED")
    h = Harness()
    for event in [events[0], events[2], events[1], events[3]]:  # RUNNING before QUEUED
        h.feed(event)
    assert h.applied == [(None, "SUBMITTED"), ("SUBMITTED", "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "COMPLETED")]
    assert h.state["status"] == "COMPLETED" and h.state["parked"] == []


def test_every_permutation_after_submit_ends_in_the_same_state():
    events = _job("COMPLETED")
    for order in itertools.permutations(events[1:]):
        h = Harness()
        for event in [events[0], *order]:
            h.feed(event)
        assert h.state["status"] == "COMPLETED", order
        assert len(h.applied) == 4 and h.rejected == []


def test_invalid_transition_from_a_terminal_status_is_rejected():
    events = _job("COMPLETED")
    h = Harness()
    for event in events:
        h.feed(event)
    late = JobStatusChanged(**{**events[2].asdict(), "event_id": "late-1"})
    h.feed(late)
    assert h.rejected == [("late-1", "invalid-transition")]
    assert h.state["status"] == "COMPLETED"


def test_unknown_job_and_second_submit_are_rejected():
    events = _job("COMPLETED")
    h = Harness()
    h.feed(events[1])
    assert h.rejected == [(events[1].event_id, "unknown-job")] and h.state is None
    h.feed(events[0])
    again = type(events[0])(**{**events[0].asdict(), "event_id": "again"})
    h.feed(again)
    assert ("again", "duplicate-submit") in h.rejected


def _failed(base, *, retriable: bool, retry_count: int, eid: str) -> JobFailed:
    return JobFailed(**{**base.asdict(), "event_id": eid, "event_type": "JobFailed"}, error_code="NODE",
                     error_message="node lost", retry_count=retry_count, retriable=retriable)


def _queued(base, eid: str) -> JobQueued:
    return JobQueued(**{**base.asdict(), "event_id": eid, "event_type": "JobQueued"}, queue_name="normal")


def test_retriable_failure_goes_back_to_queued_until_the_maximum():
    events = _job("COMPLETED")
    base = {k: v for k, v in events[1].asdict().items() if k in events[0].asdict() and k in events[1].asdict()}
    h = Harness()
    for event in events[:3]:
        h.feed(event)
    proto = type("P", (), {"asdict": lambda self: {k: base[k] for k in ("timestamp", "correlation_id", "user_id", "schema_version", "job_id")}})()
    for attempt in range(MAX_RETRIES):
        h.feed(_failed(proto, retriable=True, retry_count=attempt, eid=f"f{attempt}"))
        h.feed(_queued(proto, f"q{attempt}"))
        h.feed(JobStatusChanged(**proto.asdict(), event_id=f"r{attempt}", event_type="JobStatusChanged",
                                previous_status="QUEUED", new_status="RUNNING"))
    assert h.state["retry_count"] == MAX_RETRIES and h.state["status"] == "RUNNING"
    h.feed(_failed(proto, retriable=True, retry_count=MAX_RETRIES, eid="f-last"))
    assert is_terminal(h.state, max_retries=MAX_RETRIES)
    h.feed(_queued(proto, "q-too-many"))
    assert ("q-too-many", "invalid-transition") in h.rejected
    retries = [a for a in h.applied if a == ("FAILED", "QUEUED")]
    assert len(retries) == MAX_RETRIES


def test_a_retry_swapped_with_its_failure_still_applies():
    events = _job("COMPLETED")
    proto = type("P", (), {"asdict": lambda self: {k: events[1].asdict()[k] for k in ("timestamp", "correlation_id", "user_id", "schema_version", "job_id")}})()
    h = Harness()
    for event in events[:3]:
        h.feed(event)
    h.feed(_queued(proto, "q0"))  # arrives before the failure it retries
    h.feed(_failed(proto, retriable=True, retry_count=0, eid="f0"))
    assert h.applied[-2:] == [("RUNNING", "FAILED"), ("FAILED", "QUEUED")]
    assert h.state["status"] == "QUEUED" and h.state["retry_count"] == 1


def test_parking_is_bounded():
    events = _job("COMPLETED")
    proto = type("P", (), {"asdict": lambda self: {k: events[1].asdict()[k] for k in ("timestamp", "correlation_id", "user_id", "schema_version", "job_id")}})()
    h = Harness()
    h.feed(events[0])
    for n in range(MAX_PARKED + 2):
        h.feed(JobStatusChanged(**proto.asdict(), event_id=f"r{n}", event_type="JobStatusChanged",
                                previous_status="QUEUED", new_status="RUNNING"))
    assert len(h.state["parked"]) == MAX_PARKED
    assert [r for _, r in h.rejected] == ["out-of-order-overflow", "out-of-order-overflow"]
