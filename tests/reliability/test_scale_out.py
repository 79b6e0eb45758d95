"""Scale-out: two workers in one group with standby replicas; one is SIGKILLed mid-stream.

Its partitions move to the survivor, whose tables come back from its standbys and the
changelogs; the final tables equal what one worker computes for the same workload (the
workload's known outcome, which the single-worker pipeline test checks), and the stall —
from the kill until the survivor applies an event of a partition the dead worker owned — is
reported.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from app.core.settings import Settings
from app.ops.worker_process import free_port
from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from fault_support import account_job_states, publish_paced
from support.polling import wait_until_async
from support.workers import wait_for_final_states

JOBS = 300
SESSION_TIMEOUT_S = 6  # Kafka's smallest (group.min.session.timeout.ms): the stall is this plus the rebalance


def _split_by_position(deliveries: list, *, first: int) -> tuple[list, list]:
    """(each job's first ``first`` deliveries, the rest), both in delivery order."""
    seen: Counter = Counter()
    head, tail = [], []
    for event in deliveries:
        (head if seen[event.job_id] < first else tail).append(event)
        seen[event.job_id] += 1
    return head, tail


def _job_states(worker) -> dict:  # noqa: ANN001
    try:
        return worker.table("job_state", local=True)  # this worker's partitions only
    except OSError:  # rebalancing: nothing to read this time
        return {}


async def test_two_workers_one_killed_partitions_move_tables_survive(worker_factory, worker_env, uid, tmp_path, report):  # noqa: ANN001
    common = {"COSMIC_RABBITMQ_BRIDGE_ENABLED": "false", "COSMIC_TABLE_STANDBY_REPLICAS": "1",
              "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_S)}
    settings = Settings.from_env(environ=worker_env)
    workload = build_workload(jobs=JOBS, seed=31, prefix=f"job-{uid}")
    head, tail = _split_by_position(workload.deliveries, first=2)
    row = report(scenario="scale-out: 2 workers, one SIGKILLed", events_in=len(workload.deliveries))

    survivor = await asyncio.to_thread(worker_factory(
        **common, COSMIC_DATA_DIR=str(tmp_path / "w1"), COSMIC_WEB_PORT=str(free_port())).start)
    victim = await asyncio.to_thread(worker_factory(
        **common, COSMIC_DATA_DIR=str(tmp_path / "w2"), COSMIC_WEB_PORT=str(free_port())).start)

    async with EventPublisher(settings=settings) as publisher:
        await publish_paced(publisher=publisher, events=head, rate=1_000.0)
        # Both workers own some of the jobs once the first events are applied.
        def both_own_jobs(owned: tuple[dict, dict]) -> bool:
            mine, theirs = owned
            return bool(set(mine) | set(theirs) >= set(workload.final_status) and mine and theirs)

        mine, theirs = await wait_until_async(
            lambda: asyncio.gather(asyncio.to_thread(_job_states, survivor), asyncio.to_thread(_job_states, victim)),
            timeout=240, interval=1.0, what="both workers owning jobs", accept=both_own_jobs, fail=False)
        assert mine and theirs, f"one worker owns no partition: {len(mine)} / {len(theirs)} jobs"
        assert set(mine) | set(theirs) >= set(workload.final_status)
        moved = {job: value["status"] for job, value in theirs.items() if job not in mine}
        assert moved, "the victim's jobs must be ones the survivor does not serve"

        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()
        stream = asyncio.create_task(publish_paced(publisher=publisher, events=tail, rate=1_000.0))

        async def moved_on() -> float | None:
            now = await asyncio.to_thread(_job_states, survivor)
            if any(now.get(job, {}).get("status") not in (None, before) for job, before in moved.items()):
                return time.monotonic() - killed_at
            return None

        stall = await wait_until_async(moved_on, timeout=300, interval=0.25, what="the survivor taking over",
                                       accept=lambda s: s is not None, fail=False)
        await stream
    assert stall is not None, f"the survivor never took over the victim's partitions\n{survivor.log_tail()}"

    states = await asyncio.to_thread(wait_for_final_states, worker=survivor, workload=workload, timeout=420)
    account_job_states(row=row, workload=workload, states=states)
    counts: Counter = Counter()
    for value in (await asyncio.to_thread(survivor.table, "job_counts")).values():
        counts.update(value["counts"])
    row.sink(name="job_counts (jobs per status)", expected={f"{s}#{i}" for s, n in Counter(workload.final_status.values()).items() for i in range(n)},
             seen=[f"{s}#{i}" for s, n in (+counts).items() for i in range(n)])
    row.notes["stall after SIGKILL"] = (f"{stall:.1f} s (session timeout {SESSION_TIMEOUT_S} s, then rebalance "
                                        f"and standby promotion); {len(moved)} jobs moved")
    for name, c in row.sinks.items():
        assert c["lost"] == 0 and c["duplicated"] == 0 and c["unexpected"] == 0, f"{name}: {c}\n{survivor.log_tail()}"
    for job, state in states.items():
        if job in workload.lifecycles:
            assert len(state["timestamps"]) == len({e.status_after() for e in workload.lifecycles[job]}), job
