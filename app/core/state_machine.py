"""The job state machine, as pure functions (no Faust, no I/O).

    SUBMITTED → QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED
    SUBMITTED, QUEUED → CANCELLED | FAILED
    FAILED (retriable, retries left) → QUEUED   (retry_count + 1, at most ``max_retries``)

Out-of-order rule (deterministic; all of a job's events share a partition, so "out of order"
means the producer emitted them out of order):

1. An event whose transition is valid from the job's current status is **applied**.
2. An event that is not valid now but whose target status is still reachable from the
   current status (e.g. RUNNING arriving before QUEUED) is **parked** in the job's state.
   After every applied transition the parked events are retried, oldest event time first
   (ties by arrival), until none applies. So a swapped pair ends up applied in its logical
   order, each transition audited once.
3. An event whose target can never be reached (the job is terminal, e.g. COMPLETED →
   RUNNING, or a second JobSubmitted) is **rejected** with a reason; when the job becomes
   terminal, every event still parked is rejected (``invalid-transition``). At most
   ``MAX_PARKED`` events are parked per job; beyond that the oldest is rejected
   (``out-of-order-overflow``).
4. Events for a job that was never submitted are rejected (``unknown-job``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.models import TERMINAL_STATUSES, JobEvent, JobFailed, JobStatusChanged, JobSubmitted

MAX_PARKED = 16

FORWARD: dict[str, frozenset[str]] = {
    "SUBMITTED": frozenset({"QUEUED", "CANCELLED", "FAILED"}),
    "QUEUED": frozenset({"RUNNING", "CANCELLED", "FAILED"}),
    "RUNNING": frozenset({"COMPLETED", "FAILED", "CANCELLED"}),
    "FAILED": frozenset({"QUEUED"}),  # only a retriable failure with retries left
    "COMPLETED": frozenset(),
    "CANCELLED": frozenset(),
}
ACTIVE_STATUSES = frozenset({"SUBMITTED", "QUEUED", "RUNNING"})


@dataclass(frozen=True, kw_only=True)
class Transition:
    """One applied status change of a job."""

    event_id: str
    event_type: str
    from_status: str | None
    to_status: str
    at_ms: int
    retry_count: int
    is_retry: bool = False


@dataclass(kw_only=True)
class Outcome:
    """What handling one event did: transitions applied, events parked, events rejected."""

    state: dict[str, Any] | None
    transitions: list[Transition] = field(default_factory=list)
    parked: bool = False
    rejected: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)  # (entry, reason, message)


def is_terminal(state: dict[str, Any], *, max_retries: int) -> bool:
    status = state["status"]
    if status == "FAILED":
        return not (state.get("last_failure_retriable") and state.get("retry_count", 0) < max_retries)
    return status in TERMINAL_STATUSES


def _valid(state: dict[str, Any], event: JobEvent, *, max_retries: int) -> bool:
    current = state["status"]
    target = event.status_after()
    if target not in FORWARD.get(current, frozenset()):
        return False
    if isinstance(event, JobStatusChanged) and event.previous_status != current:
        return False
    if current == "FAILED":
        return bool(state.get("last_failure_retriable")) and state.get("retry_count", 0) < max_retries
    return True


def _reachable(state: dict[str, Any], target: str, *, max_retries: int) -> bool:
    """Whether ``target`` can still be reached from the current status."""
    if is_terminal(state, max_retries=max_retries):
        return False
    seen: set[str] = set()
    frontier = [state["status"]]
    retries_left = max_retries - state.get("retry_count", 0) > 0
    while frontier:
        status = frontier.pop()
        for nxt in FORWARD[status]:
            if status == "FAILED" and not retries_left:
                continue
            if nxt == target:
                return True
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return False


def _apply(state: dict[str, Any], event: JobEvent, *, at_ms: int) -> tuple[dict[str, Any], Transition]:
    new = dict(state)
    previous = state["status"]
    target = event.status_after()
    is_retry = previous == "FAILED" and target == "QUEUED"
    if is_retry:
        new["retry_count"] = state.get("retry_count", 0) + 1
    if isinstance(event, JobFailed):
        new["last_failure_retriable"] = bool(event.retriable)
        new["last_error"] = {"code": event.error_code, "message": event.error_message}
    new["status"] = target
    new["timestamps"] = {**state.get("timestamps", {}), target: at_ms}
    new["last_event_id"] = event.event_id
    new["correlation_id"] = event.correlation_id
    new["updated_at"] = at_ms
    transition = Transition(
        event_id=event.event_id, event_type=event.event_type, from_status=previous, to_status=target,
        at_ms=at_ms, retry_count=new.get("retry_count", 0), is_retry=is_retry,
    )
    return new, transition


def new_job(event: JobSubmitted, *, at_ms: int) -> tuple[dict[str, Any], Transition]:
    state = {
        "job_id": event.job_id,
        "status": "SUBMITTED",
        "user_id": event.user_id,
        "job_type": event.job_type,
        "tacc_system": event.tacc_system,
        "retry_count": 0,
        "timestamps": {"SUBMITTED": at_ms},
        "last_event_id": event.event_id,
        "correlation_id": event.correlation_id,
        "submitted_at": at_ms,
        "updated_at": at_ms,
        "parked": [],
    }
    return state, Transition(
        event_id=event.event_id, event_type=event.event_type, from_status=None, to_status="SUBMITTED",
        at_ms=at_ms, retry_count=0,
    )


def decide(
    *, state: dict[str, Any] | None, event: JobEvent, at_ms: int, parked_entry: dict[str, Any],
    decode_parked: Any, max_retries: int,
) -> Outcome:
    """Handle ``event`` against ``state``; ``parked_entry`` is what to store if it is parked,
    ``decode_parked(entry) -> (JobEvent, at_ms)`` rebuilds parked events for retrying."""
    if isinstance(event, JobSubmitted):
        if state is not None:
            return Outcome(state=state, rejected=[(parked_entry, "duplicate-submit",
                                                   f"job {event.job_id} was already submitted")])
        new, transition = new_job(event, at_ms=at_ms)
        return Outcome(state=new, transitions=[transition])
    if state is None:
        return Outcome(state=None, rejected=[(parked_entry, "unknown-job",
                                              f"no JobSubmitted seen for job {event.job_id}")])
    target = event.status_after()
    if _valid(state, event, max_retries=max_retries):
        new, transition = _apply(state, event, at_ms=at_ms)
        outcome = Outcome(state=new, transitions=[transition])
        _drain_parked(outcome, decode_parked=decode_parked, max_retries=max_retries)
        return outcome
    if _reachable(state, target, max_retries=max_retries):
        new = dict(state)
        parked = list(state.get("parked", [])) + [parked_entry]
        rejected = []
        while len(parked) > MAX_PARKED:
            rejected.append((parked.pop(0), "out-of-order-overflow",
                             f"more than {MAX_PARKED} events waiting for a predecessor"))
        new["parked"] = parked
        return Outcome(state=new, parked=True, rejected=rejected)
    return Outcome(state=state, rejected=[(parked_entry, "invalid-transition",
                                           f"{state['status']} → {target} is not a valid transition")])


def _drain_parked(outcome: Outcome, *, decode_parked: Any, max_retries: int) -> None:
    state = outcome.state
    assert state is not None
    progress = True
    while progress and state.get("parked"):
        progress = False
        entries = sorted(state["parked"], key=lambda e: (e["at_ms"], e["seq"]))
        for entry in entries:
            parked_event, at_ms = decode_parked(entry)
            if _valid(state, parked_event, max_retries=max_retries):
                remaining = [e for e in state["parked"] if e is not entry]
                state, transition = _apply(state, parked_event, at_ms=at_ms)
                state["parked"] = remaining
                outcome.transitions.append(transition)
                progress = True
                break
    if is_terminal(state, max_retries=max_retries) and state.get("parked"):
        for entry in state["parked"]:
            outcome.rejected.append((entry, "invalid-transition",
                                     f"job reached {state['status']} before this event could apply"))
        state = {**state, "parked": []}
    outcome.state = state
