"""Fuzzing the job state machine (``app.core.state_machine.decide``) with random event sequences.

Hypothesis feeds one job random sequences of lifecycle events — any type, any
previous/new status, retriable or not, colliding event times, duplicates of submit — through
``decide`` the way the agent does (parked events kept and handed back). After every event:

* the job is never in an illegal state: its status is a job status, every applied transition
  is an edge of the documented graph, retries never exceed the maximum, at most MAX_PARKED
  events wait, and nothing waits once the job is terminal;
* terminal stays terminal: once COMPLETED, CANCELLED or finally FAILED, nothing changes;
* every event is accounted for exactly once: applied, still parked, or rejected with a reason;
* the outcome equals a small, independently written model of the rules of docs/pipeline.md
  (explicit transition and reachability tables instead of a graph search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.models import (
    JOB_STATUSES,
    JobCancelled,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobQueued,
    JobStatusChanged,
    JobSubmitted,
    MetricsSummary,
    ResourceRequest,
)
from app.core.state_machine import MAX_PARKED, decide, is_terminal

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)

# -- the model ----------------------------------------------------------------------------------
#: (status, target) pairs an event may take a job along.
LEGAL = {
    ("SUBMITTED", "QUEUED"), ("SUBMITTED", "CANCELLED"), ("SUBMITTED", "FAILED"),
    ("QUEUED", "RUNNING"), ("QUEUED", "CANCELLED"), ("QUEUED", "FAILED"),
    ("RUNNING", "COMPLETED"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELLED"),
    ("FAILED", "QUEUED"),
}
_AFTER_SUBMIT = {"QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"}


def reachable_targets(status: str, *, retries_left: bool) -> set[str]:
    """Statuses a non-terminal job in ``status`` may still reach (written out, not searched)."""
    if status == "SUBMITTED":
        return set(_AFTER_SUBMIT)
    if status == "QUEUED":
        return {"RUNNING", "COMPLETED", "FAILED", "CANCELLED"} | ({"QUEUED"} if retries_left else set())
    if status == "RUNNING":
        return {"COMPLETED", "FAILED", "CANCELLED"} | ({"QUEUED", "RUNNING"} if retries_left else set())
    if status == "FAILED":  # non-terminal: retriable with retries left
        return set(_AFTER_SUBMIT)
    return set()


@dataclass
class Model:
    max_retries: int
    status: str | None = None
    retries: int = 0
    retriable: bool = False
    parked: list[tuple[int, int, JobEvent]] = field(default_factory=list)  # (at_ms, seq, event)
    applied: list[tuple[str, str | None, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def terminal(self) -> bool:
        if self.status == "FAILED":
            return not (self.retriable and self.retries < self.max_retries)
        return self.status in ("COMPLETED", "CANCELLED")

    def legal(self, event: JobEvent) -> bool:
        target = target_of(event)
        if (self.status, target) not in LEGAL:
            return False
        if isinstance(event, JobStatusChanged) and event.previous_status != self.status:
            return False
        if self.status == "FAILED":
            return self.retriable and self.retries < self.max_retries
        return True

    def apply(self, event: JobEvent) -> None:
        target = target_of(event)
        if self.status == "FAILED" and target == "QUEUED":
            self.retries += 1
        if isinstance(event, JobFailed):
            self.retriable = bool(event.retriable)
        self.applied.append((event.event_id, self.status, target))
        self.status = target

    def feed(self, event: JobEvent, at_ms: int, seq: int) -> None:
        if isinstance(event, JobSubmitted):
            if self.status is not None:
                self.rejected.append((event.event_id, "duplicate-submit"))
            else:
                self.applied.append((event.event_id, None, "SUBMITTED"))
                self.status = "SUBMITTED"
            return
        if self.status is None:
            self.rejected.append((event.event_id, "unknown-job"))
            return
        if self.legal(event):
            self.apply(event)
            self.drain()
            return
        left = self.retries < self.max_retries
        if not self.terminal() and target_of(event) in reachable_targets(self.status, retries_left=left):
            self.parked.append((at_ms, seq, event))
            while len(self.parked) > MAX_PARKED:
                self.rejected.append((self.parked.pop(0)[2].event_id, "out-of-order-overflow"))
            return
        self.rejected.append((event.event_id, "invalid-transition"))

    def drain(self) -> None:
        while True:
            ready = [p for p in sorted(self.parked, key=lambda p: (p[0], p[1])) if self.legal(p[2])]
            if not ready:
                break
            self.parked.remove(ready[0])
            self.apply(ready[0][2])
        if self.terminal():
            self.rejected.extend((p[2].event_id, "invalid-transition") for p in self.parked)
            self.parked = []


def target_of(event: JobEvent) -> str:
    if isinstance(event, JobStatusChanged):
        return event.new_status
    return {JobSubmitted: "SUBMITTED", JobQueued: "QUEUED", JobCompleted: "COMPLETED", JobFailed: "FAILED",
            JobCancelled: "CANCELLED"}[type(event)]


# -- events -------------------------------------------------------------------------------------
def make_event(kind: str, n: int, *, at_ms: int, previous: str = "QUEUED", new: str = "RUNNING",
               retriable: bool = True) -> JobEvent:
    base: dict[str, Any] = dict(event_id=f"e{n}", event_type=kind, timestamp=EPOCH + timedelta(milliseconds=at_ms),
                                correlation_id="c", user_id="u", schema_version=1, job_id="j")
    if kind == "JobSubmitted":
        return JobSubmitted(**base, tacc_system="frontera", resource_request=ResourceRequest(nodes=1, gpus=0,
                            walltime="01:00:00"), estimated_cost_usd=1.0, priority=1, job_type="imaging")
    if kind == "JobQueued":
        return JobQueued(**base, queue_name="normal")
    if kind == "JobStatusChanged":
        return JobStatusChanged(**base, previous_status=previous, new_status=new)
    if kind == "JobCompleted":
        return JobCompleted(**base, result_location="s3://r", metrics_summary=MetricsSummary(
            execution_time_s=1.0, cpu_pct_mean=1.0, gpu_pct_mean=0.0, memory_gb_max=1.0))
    if kind == "JobFailed":
        return JobFailed(**base, error_code="E", error_message="boom", retry_count=0, retriable=retriable)
    return JobCancelled(**base, cancelled_by="u")


_KINDS = ["JobSubmitted", "JobQueued", "JobStatusChanged", "JobStatusChanged", "JobCompleted", "JobFailed",
          "JobFailed", "JobCancelled"]
#: Kinds that mostly wait for a predecessor: floods of them reach the parking limit.
_PARKING_KINDS = ["JobStatusChanged", "JobCompleted"]


def _steps(kinds: list[str], *, min_size: int = 0) -> st.SearchStrategy[list[tuple]]:
    step = st.tuples(st.sampled_from(kinds), st.integers(0, 12), st.sampled_from(JOB_STATUSES),
                     st.sampled_from(JOB_STATUSES), st.booleans())
    return st.lists(step, min_size=min_size, max_size=40)


_STEPS = st.one_of(_steps(_KINDS), _steps(_PARKING_KINDS, min_size=MAX_PARKED + 2))
#: A plausible run (submit, queue, run) first now and then, so deep states are reached often.
_PREFIX = st.sampled_from([[], [("JobSubmitted", 0, "QUEUED", "RUNNING", True)],
                           [("JobSubmitted", 0, "QUEUED", "RUNNING", True), ("JobQueued", 1, "QUEUED", "RUNNING", True),
                            ("JobStatusChanged", 2, "QUEUED", "RUNNING", True)]])


@FUZZ
@given(prefix=_PREFIX, steps=_STEPS, max_retries=st.integers(0, 3))
def test_random_sequences_stay_legal_and_match_the_model(
        prefix: list[tuple], steps: list[tuple], max_retries: int) -> None:
    events: dict[str, JobEvent] = {}
    model = Model(max_retries=max_retries)
    state: dict[str, Any] | None = None
    applied: list[tuple[str, str | None, str]] = []
    rejected: list[tuple[str, str]] = []
    was_terminal = False
    for seq, (kind, at_ms, previous, new, retriable) in enumerate(prefix + steps):
        event = make_event(kind, seq, at_ms=at_ms, previous=previous, new=new, retriable=retriable)
        events[event.event_id] = event
        entry = {"event_id": event.event_id, "at_ms": at_ms, "seq": seq}
        before = state
        outcome = decide(state=state, event=event, at_ms=at_ms, parked_entry=entry,
                         decode_parked=lambda e: (events[e["event_id"]], e["at_ms"]), max_retries=max_retries)
        state = outcome.state
        applied += [(t.event_id, t.from_status, t.to_status) for t in outcome.transitions]
        rejected += [(e["event_id"], reason) for e, reason, _ in outcome.rejected]
        model.feed(event, at_ms, seq)

        # never an illegal state
        for _, source, target in applied[len(applied) - len(outcome.transitions):]:
            assert (source, target) in LEGAL or (source, target) == (None, "SUBMITTED"), (source, target)
        if state is not None:
            assert state["status"] in JOB_STATUSES
            assert 0 <= state.get("retry_count", 0) <= max_retries
            assert len(state.get("parked", [])) <= MAX_PARKED
            terminal = is_terminal(state, max_retries=max_retries)
            if terminal:
                assert state.get("parked", []) == []
            # terminal stays terminal
            if was_terminal:
                assert outcome.transitions == [] and state["status"] == before["status"]  # type: ignore[index]
            was_terminal = was_terminal or terminal

        # the model agrees
        assert (state or {}).get("status") == model.status
        assert (state or {}).get("retry_count", 0) == model.retries
        assert applied == model.applied
        assert rejected == model.rejected
        assert [e["event_id"] for e in (state or {}).get("parked", [])] == [p[2].event_id for p in model.parked]

    # every event accounted for exactly once
    parked = [e["event_id"] for e in (state or {}).get("parked", [])]
    outcomes = [a[0] for a in applied] + [r[0] for r in rejected] + parked
    assert sorted(outcomes) == sorted(events), "an event was lost or handled twice"
