"""Gathered reads while one of three workers dies (issue #21).

Three workers in one group take a workload; every gathered read is complete. One is
SIGKILLed. Until the group has moved its partitions, the two survivors' answers to
``/api/stats`` and ``/api/jobs`` are 503 (with ``Retry-After``) or, asked with
``allow_partial=true``, flagged ``"partial": true`` with the missing partitions — never a
complete-looking answer that is short. After the group settles they are complete again and
equal the answers before the kill.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from app.core.settings import Settings
from app.ops.worker_process import WorkerProcess, free_port
from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from support.polling import wait_until_async
from support.workers import wait_for_final_states

JOBS = 120
SESSION_TIMEOUT_S = 6
COMMON = {"COSMIC_RABBITMQ_BRIDGE_ENABLED": "false", "COSMIC_TABLE_STANDBY_REPLICAS": "0",
          "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_S), "COSMIC_GATHER_TIMEOUT_SECONDS": "2"}
PATHS = ("/api/stats", "/api/jobs?limit=1000")


def _get(worker: WorkerProcess, path: str, token: str) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(worker.base_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)
    except OSError as exc:  # the worker itself unreachable: not an answer
        return 0, repr(exc), {}


def _content(path: str, body: dict[str, Any]) -> Any:
    """What must equal the answer before the kill: the counts, or the job ids listed."""
    if path.startswith("/api/stats"):
        return body["jobs"]["by_status"], body["jobs"]["total"]
    return sorted(job["job_id"] for job in body["jobs"])


async def test_one_of_three_killed_answers_are_503_or_flagged_until_the_group_settles(worker_factory, worker_env,
                                                                                     tmp_path, uid, report):
    settings = Settings.from_env(environ=worker_env)
    workers = [await asyncio.to_thread(worker_factory(**COMMON, COSMIC_DATA_DIR=str(tmp_path / f"w{n}"),
                                                      COSMIC_WEB_PORT=str(free_port())).start) for n in range(3)]
    token = workers[0].operator_token()
    workload = build_workload(jobs=JOBS, seed=9, prefix=f"job-{uid}")
    row = report(scenario="gather: 3 workers, one SIGKILLed", events_in=len(workload.deliveries))
    async with EventPublisher(settings=settings) as publisher:
        await publisher.publish_many(workload.deliveries)
    await asyncio.to_thread(wait_for_final_states, worker=workers[0], workload=workload, timeout=300)

    def held_by_each() -> list[list[int]]:
        return [(_get(w, "/api/stats?local=true", token)[1] or {}).get("jobs", {}).get("partitions", []) for w in workers]

    held = await wait_until_async(lambda: asyncio.to_thread(held_by_each), timeout=120, interval=1.0,
                                  what="every worker holding job-lifecycle partitions", accept=all)
    before: dict[str, Any] = {}
    for path in PATHS:
        status, body, _ = await asyncio.to_thread(_get, workers[1], path, token)
        assert status == 200 and body["partial"] is False, (path, status, body)
        before[path] = _content(path, body)
    assert before["/api/stats"][1] == JOBS and len(before["/api/jobs?limit=1000"]) == JOBS

    victim, survivors = workers[2], workers[:2]
    await asyncio.to_thread(victim.kill)
    killed_at = time.monotonic()
    seen = {"503": 0, "partial": 0, "complete": 0, "not ready": 0}

    def poll_once() -> bool:
        """Every survivor's answer to every path, checked; True once all are complete."""
        complete = True
        for worker in survivors:
            for path in PATHS:
                for query in ("", "&allow_partial=true" if "?" in path else "?allow_partial=true"):
                    status, body, headers = _get(worker, path + query, token)
                    if status == 503:
                        assert headers.get("Retry-After") == "1", (path, body)
                        seen["not ready" if body.get("error") == "not ready" else "503"] += 1
                        assert body.get("error") == "not ready" or body.get("missing_partitions"), body
                        complete = False
                    elif status == 200 and body["partial"]:
                        assert query and body["missing_partitions"], (path, query, body)
                        seen["partial"] += 1
                        complete = False
                    else:
                        assert status == 200 and body["missing_partitions"] == [], (path, status, body)
                        # a complete-looking answer is complete: never silently short
                        assert _content(path, body) == before[path], (worker.base_url, path, query)
                        seen["complete"] += 1
        return complete

    settled_after = await wait_until_async(
        lambda: asyncio.to_thread(lambda: poll_once() and time.monotonic() - killed_at), timeout=180,
        interval=0.2, what="complete answers from both survivors")
    assert seen["503"] + seen["partial"] + seen["not ready"] > 0, seen  # the kill was visible, and flagged
    for worker in survivors:
        for path in PATHS:
            status, body, _ = await asyncio.to_thread(_get, worker, path, token)
            assert status == 200 and body["partial"] is False and _content(path, body) == before[path]
    row.notes["answers while settling"] = (f"{seen['503']} incomplete-503, {seen['not ready']} not-ready-503, "
                                           f"{seen['partial']} flagged partial, {seen['complete']} complete "
                                           f"(all equal to before the kill)")
    row.notes["complete again after"] = f"{settled_after:.1f} s (session timeout {SESSION_TIMEOUT_S} s)"
    row.notes["partitions held before"] = " / ".join(",".join(map(str, h)) for h in held)
