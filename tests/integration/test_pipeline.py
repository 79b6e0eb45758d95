"""The job lifecycle pipeline on real Kafka: 1,000 jobs, duplicates, swapped pairs, a SIGKILL.

Must show: every job's final state is right; exactly one audit record per applied
transition; exactly one notification per terminal or retry transition; the same after the
worker is killed mid-stream and restarted; `cosmic rebuild` finds no difference.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter

from app.core.anomaly import RUNTIME_ANOMALY, RUNTIME_OVERRUN
from app.core.codecs import Codecs
from app.core.ids import derived_id
from app.core.settings import PROJECT_ROOT, Settings
from app.ops.topic_reader import read_topic
from app.ops.workload import Workload, build_workload
from app.worker.publisher import EventPublisher
from support.audit import poll_audit_chain
from support.polling import wait_until_async
from support.workers import wait_for_final_states

JOBS = 1000


async def _publish(settings: Settings, workload: Workload) -> None:
    async with EventPublisher(settings=settings) as publisher:
        for i in range(0, len(workload.deliveries), 500):
            await publisher.publish_many(workload.deliveries[i:i + 500])


async def _decoded(settings: Settings, topic: str) -> list:
    codec = Codecs(settings=settings).for_topic(topic)
    return [codec.decode(r.value) for r in await read_topic(bootstrap=settings.kafka_bootstrap, topic=settings.topic_prefix + topic)]


async def _check_effects(settings: Settings, workload: Workload, *, exact_messages: bool) -> dict:
    audits = await _decoded(settings, "audit-trail")
    notes = await _decoded(settings, "notifications")
    # The lifecycle agent's notifications; the runtime-anomaly agent may add its own (random
    # runtimes can be outliers), told apart by their derived ids.
    lifecycle_ids = {derived_id(e, "notification") for e in workload.event_ids}
    anomaly_ids = {derived_id(e, f"notification:{rule}") for e in workload.event_ids
                   for rule in (RUNTIME_ANOMALY, RUNTIME_OVERRUN)}
    assert {n.event_id for n in notes} <= lifecycle_ids | anomaly_ids
    notes = [n for n in notes if n.event_id in lifecycle_ids]
    audit_ids = Counter(a.event_id for a in audits)
    note_ids = Counter(n.event_id for n in notes)
    # Exactly one audit record (by id) per applied transition, covering every lifecycle event.
    assert len(audit_ids) == workload.transitions
    assert {a.source_event_id for a in audits} == workload.event_ids
    assert len(note_ids) == workload.notifications
    if exact_messages:
        assert len(audits) == workload.transitions, "a clean run writes no duplicate audit messages"
        assert len(notes) == workload.notifications
    return {"audit_messages": len(audits), "audit_ids": len(audit_ids),
            "notification_messages": len(notes), "notification_ids": len(note_ids)}


def _audit_chain_entries(env: dict, expected: int, *, timeout: float = 120.0) -> dict:
    """Wait until the audit agent chained ``expected`` records; return `cosmic audit verify --json`."""
    report, returncode = poll_audit_chain(env, expected, timeout=timeout)
    if returncode is None:
        raise AssertionError(f"audit chain has {report.get('total')} of {expected} entries: {report}")
    assert returncode == 0, report
    return report


def _rebuild(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.ops.cli", "rebuild", "--mode", "online"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def _check_states(states: dict, workload: Workload) -> None:
    for job, status in workload.final_status.items():
        state = states[job]
        assert state["status"] == status, job
        assert state["retry_count"] == workload.retry_count[job], job
        assert state["parked"] == [], job
        assert len(state["timestamps"]) == len({e.status_after() for e in workload.lifecycles[job]})


async def test_thousand_jobs_with_duplicates_and_swaps(worker_factory, worker_env, uid):
    settings = Settings.from_env(environ=worker_env)
    workload = build_workload(jobs=JOBS, seed=1, prefix=f"job-{uid}")
    assert workload.duplicates > 0.05 * len(workload.deliveries) and workload.swaps > 100
    worker = await asyncio.to_thread(worker_factory().start)
    await _publish(settings, workload)
    states = await asyncio.to_thread(wait_for_final_states, worker=worker, workload=workload, timeout=240)
    _check_states(states, workload)
    counts = Counter()
    for value in (await asyncio.to_thread(worker.table, "job_counts")).values():
        counts.update(value["counts"])
    assert +counts == Counter(workload.final_status.values())

    figures = await _check_effects(settings, workload, exact_messages=True)
    chain = await asyncio.to_thread(_audit_chain_entries, worker_env, workload.transitions)
    assert chain["ok"] and chain["total"] == workload.transitions, "one chained audit record per transition"
    dead = [r for r in await read_topic(bootstrap=settings.kafka_bootstrap, topic=f"{uid}-job-lifecycle.dlq")]
    reasons = Counter(dict(r.headers)["dlq.reason"].decode() for r in dead)
    assert reasons == {}, reasons  # exact duplicates are dropped and counted, not dead-lettered
    dropped = await asyncio.to_thread(worker.metric, "cosmic_duplicates_dropped_total", topic="job-lifecycle")
    assert dropped == workload.duplicates

    rebuilt = await asyncio.to_thread(_rebuild, worker_env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"rebuild: {JOBS} jobs recomputed" in rebuilt.stdout and "0 differences" in rebuilt.stdout
    print(f"\npipeline: {len(workload.deliveries)} events, {workload.duplicates} duplicates, "
          f"{workload.swaps} swapped pairs, {figures}")


async def _settled_tables(worker, names: tuple[str, ...], *, quiet_s: float = 2.0,  # noqa: ANN001
                          timeout_s: float = 60.0) -> dict[str, dict]:
    """``worker``'s tables ``names`` once two reads ``quiet_s`` apart agree."""
    async def read() -> dict[str, dict]:
        return {name: await asyncio.to_thread(worker.table, name) for name in names}

    current = await read()

    async def quiet() -> tuple[bool, dict[str, dict]]:
        nonlocal current
        await asyncio.sleep(quiet_s)
        latest = await read()
        same, current = latest == current, latest
        return same, latest

    _, latest = await wait_until_async(quiet, timeout=timeout_s, interval=0, what=f"tables {names} quiet",
                                       accept=lambda answer: answer[0], fail=False)
    return latest


async def test_sigkill_mid_stream_gives_identical_results(worker_factory, worker_env, uid):
    settings = Settings.from_env(environ=worker_env)
    workload = build_workload(jobs=JOBS, seed=2, prefix=f"job-{uid}")
    # Kafka's shortest session (group.min.session.timeout.ms): the killed worker's partitions
    # move to the next one 6 s after the kill, not after the default 60 s.
    session = {"COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": "6"}
    first = await asyncio.to_thread(worker_factory(**session).start)
    await _publish(settings, workload)
    # Kill it once it is part-way through.

    async def finished() -> int:
        return sum(1 for v in (await asyncio.to_thread(first.table, "job_state")).values()
                   if v["status"] in ("COMPLETED", "FAILED", "CANCELLED"))

    done = await wait_until_async(finished, timeout=120, interval=0.2, what=f"{JOBS // 4} jobs finished",
                                  accept=lambda n: n >= JOBS // 4, fail=False)
    assert done < JOBS, "the worker finished before it could be killed; the test proves nothing"
    first.kill()
    second = await asyncio.to_thread(worker_factory(**session).start)
    states = await asyncio.to_thread(wait_for_final_states, worker=second, workload=workload, timeout=240)
    _check_states(states, workload)
    figures = await _check_effects(settings, workload, exact_messages=False)
    chain = await asyncio.to_thread(_audit_chain_entries, worker_env, workload.transitions)
    assert chain["ok"] and chain["total"] == workload.transitions, "re-emitted audit records chained once"

    # The changelogs agree with the survivor's local store: a worker with an EMPTY data dir,
    # rebuilt from the changelogs alone, holds exactly the same tables — every table the
    # pipeline writes, the audit indexes included.
    # (Agent cursors are left out: a read position per agent, not the pipeline's state.)
    tables = ("job_state", "job_counts", "active_jobs", "known_jobs", "runtime_stats", "audit_chain",
              "audit_chain_heads", "audit_by_resource", "audit_by_actor",
              "notification_deliveries", "notification_status")
    # The downstream agents (audit, notifications) may still be working when the job states are
    # final: each worker's tables are read once they stopped changing.
    before = await _settled_tables(second, tables)
    second.stop()
    shutil.rmtree(worker_env["COSMIC_DATA_DIR"])
    third = await asyncio.to_thread(worker_factory().start)
    after = await _settled_tables(third, tables)
    for name in tables:
        assert after[name] == before[name], f"{name} differs after changelog recovery"
    rebuilt = await asyncio.to_thread(_rebuild, worker_env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    print(f"\nkilled after {done} finished jobs; {figures}")
