"""produce → real worker (track_job_lifecycle) → RocksDB table → HTTP, and changelog recovery."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
from pathlib import Path

from app.core.settings import PROJECT_ROOT, Settings
from app.ops.demo import lifecycle_events
from app.worker.publisher import EventPublisher
from support.polling import wait_until


async def _publish_lifecycles(*, env: dict[str, str], jobs: list[str]) -> dict[str, str]:
    """Each job gets a full lifecycle (Avro, through the publisher); returns job_id → last event_id."""
    settings = Settings.from_env(environ=env)
    rng = random.Random(11)
    last: dict[str, str] = {}
    async with EventPublisher(settings=settings) as publisher:
        batch = []
        for job_id in jobs:
            events = lifecycle_events(job_id=job_id, user_id="u-1", rng=rng, outcome="COMPLETED")
            batch += events
            last[job_id] = events[-1].event_id
        await publisher.publish_many(batch)
    return last


def _wait_for_states(worker, jobs: list[str], *, timeout: float = 90.0) -> dict[str, dict]:
    states: dict[str, dict] = {}

    def completed() -> dict[str, dict] | None:
        for job_id in jobs:
            if states.get(job_id, {}).get("status") == "COMPLETED":
                continue
            status, body = worker.get_json(f"/api/jobs/{job_id}", operator=True)
            if status == 200:
                states[job_id] = body
        return states if all(states.get(j, {}).get("status") == "COMPLETED" for j in jobs) else None

    def missing(_last: object) -> str:
        jobs_left = [j for j in jobs if states.get(j, {}).get("status") != "COMPLETED"]
        return f"{len(jobs_left)} jobs not COMPLETED, e.g. {jobs_left[:3]}"

    return wait_until(completed, timeout=timeout, what="every job COMPLETED", describe=missing,
                      diagnostics=worker.log_tail)


async def test_events_reach_the_table_and_survive_an_empty_data_dir(worker_factory, worker_env, uid):
    jobs = [f"job-{uid}-{i}" for i in range(40)]
    worker = worker_factory().start()
    last = await _publish_lifecycles(env=worker_env, jobs=jobs)
    states = await asyncio.to_thread(_wait_for_states, worker, jobs)
    for job_id in jobs:
        assert states[job_id]["retry_count"] == 0 and states[job_id]["parked"] == []
        assert states[job_id]["last_event_id"] == last[job_id]
        assert set(states[job_id]["timestamps"]) == {"SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"}
    status, body = worker.get_json(f"/api/jobs/job-{uid}-unknown", operator=True)
    assert status == 404 and body["job_id"] == f"job-{uid}-unknown"

    # The table lives in RocksDB (rocksdict) files under the worker's data dir.
    data_dir = Path(worker_env["COSMIC_DATA_DIR"])
    table_dirs = list((data_dir / "worker" / "v1" / "tables").glob("job_state-*.db"))
    assert table_dirs, "no RocksDB table files written"

    # A new worker with an EMPTY data dir rebuilds the table from its changelog topic.
    worker.stop()
    shutil.rmtree(data_dir)
    second = worker_factory().start()
    recovered = await asyncio.to_thread(_wait_for_states, second, jobs, timeout=60)
    assert recovered == states
    assert list((data_dir / "worker" / "v1" / "tables").glob("job_state-*.db"))

    # `cosmic tables` lists the app's tables with the keys on disk (read-only, worker running).
    out = subprocess.run(
        [sys.executable, "-m", "app.ops.cli", "tables"], env=worker_env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("job_state"))
    assert f"changelog=cosmic-test-{uid}-job_state-changelog" in line
    assert "keys=40" in line


async def test_builtin_table_views_are_off(worker_factory):
    worker = worker_factory().start()
    for path in ("/table/job_state/", "/router/", "/graph/", "/stats/"):
        status, _ = await asyncio.to_thread(worker.get_json, path)
        assert status == 404, path
