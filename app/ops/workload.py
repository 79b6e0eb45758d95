"""Synthetic job workloads with known outcomes, for tests and benchmarks.

``build_workload`` makes full job lifecycles (completed, failed, cancelled, and retried then
completed), then a delivery order per job with some adjacent pairs swapped (never the
submit) and a share of events sent twice (the copy later than the original). Jobs are
interleaved while each job's own order is kept, as Kafka keeps it per key.
Swaps are only made where the overtaking event is not yet valid (see the comment below). The expected
results are computed from the lifecycles themselves, not by the state machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from app.core.models import JobEvent
from app.core.state_machine import FORWARD
from app.ops.demo import lifecycle_events

OUTCOMES = ("COMPLETED", "FAILED", "CANCELLED", "RETRIED")


@dataclass
class Workload:
    lifecycles: dict[str, list[JobEvent]]
    deliveries: list[JobEvent]
    duplicates: int
    swaps: int
    final_status: dict[str, str] = field(default_factory=dict)
    retry_count: dict[str, int] = field(default_factory=dict)
    transitions: int = 0
    notifications: int = 0

    @property
    def event_ids(self) -> set[str]:
        return {e.event_id for events in self.lifecycles.values() for e in events}


def build_workload(
    *, jobs: int, seed: int = 0, duplicate_share: float = 0.10, swap_share: float = 0.3,
    prefix: str = "job", users: int = 20, start: datetime | None = None, job_spacing_s: float = 1.0,
) -> Workload:
    """``jobs`` whole lifecycles, job *n* starting ``n * job_spacing_s`` seconds after ``start``."""
    rng = random.Random(seed)
    start = start or datetime.now(timezone.utc).replace(microsecond=0)
    lifecycles: dict[str, list[JobEvent]] = {}
    per_job_order: dict[str, list[JobEvent]] = {}
    duplicates = swaps = 0
    expected_status: dict[str, str] = {}
    expected_retries: dict[str, int] = {}
    transitions = notifications = 0
    for n in range(jobs):
        job_id = f"{prefix}-{n:05d}"
        outcome = OUTCOMES[n % len(OUTCOMES)]
        events = lifecycle_events(job_id=job_id, user_id=f"user-{n % users}", outcome=outcome,
                                  start=start + timedelta(seconds=n * job_spacing_s), rng=rng)
        lifecycles[job_id] = events
        expected_status[job_id] = {"RETRIED": "COMPLETED"}.get(outcome, outcome)
        expected_retries[job_id] = 1 if outcome == "RETRIED" else 0
        transitions += len(events)
        notifications += {"COMPLETED": 1, "FAILED": 1, "CANCELLED": 0, "RETRIED": 3}[outcome]
        order = list(events)
        # Swap a pair whose second event is NOT valid before the first (RUNNING before QUEUED,
        # COMPLETED before RUNNING, a retry before its failure): those wait, parked, and still
        # apply in order. (A CANCELLED or FAILED overtaking RUNNING is valid on arrival and
        # makes the late RUNNING invalid: a different, legitimate outcome, tested elsewhere.)
        swappable = [i for i in range(1, len(order) - 1)
                     if order[i + 1].status_after() not in FORWARD[order[i - 1].status_after()]]
        if swappable and rng.random() < swap_share:
            i = rng.choice(swappable)
            order[i], order[i + 1] = order[i + 1], order[i]
            swaps += 1
        for event in list(order):
            if rng.random() < duplicate_share:
                at = order.index(event)
                order.insert(rng.randint(at + 1, len(order)), event)
                duplicates += 1
        per_job_order[job_id] = order
    # Interleave jobs, keeping each job's own order.
    deliveries: list[JobEvent] = []
    queues = {job: list(order) for job, order in per_job_order.items()}
    while queues:
        for job in rng.sample(sorted(queues), k=min(len(queues), 50)):
            deliveries.append(queues[job].pop(0))
            if not queues[job]:
                del queues[job]
    return Workload(lifecycles=lifecycles, deliveries=deliveries, duplicates=duplicates, swaps=swaps,
                    final_status=expected_status, retry_count=expected_retries, transitions=transitions,
                    notifications=notifications)
