"""Worker processes of the integration and reliability suites: the environment of an isolated
worker, and waiting for a workload's jobs to reach their final states."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from support.polling import wait_until


def worker_environment(*, stack: Any, uid: str, data_dir: Path, web_port: int, **overrides: str) -> dict[str, str]:
    """The environment of an isolated worker on ``stack``: its own app id (consumer group,
    changelogs) and topic prefix from ``uid``, data dir, web port and a random JWT secret;
    ``overrides`` (``COSMIC_*`` names) replace or add variables."""
    env = dict(os.environ)
    env.update({
        "COSMIC_APP_ID": f"cosmic-test-{uid}",
        "COSMIC_TOPIC_PREFIX": f"{uid}-",
        "COSMIC_DATA_DIR": str(data_dir),
        "COSMIC_STACK_HOME": str(stack.settings.stack_dir),
        "COSMIC_WEB_PORT": str(web_port),
        "COSMIC_STORE": "rocksdb://",
        "COSMIC_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "COSMIC_JWT_SECRET": f"test-secret-{uuid.uuid4().hex}{uuid.uuid4().hex}",
    })
    env.update(overrides)
    return env


def wait_for_final_states(*, worker: Any, workload: Any, timeout: float) -> dict:
    """Poll the worker's ``job_state`` table until every job of ``workload`` is in its expected
    final status; the table. A worker that is rebalancing or restarting (OSError) is asked again."""

    def wrong(states: Any) -> dict:
        states = states or {}
        return {j: states.get(j, {}).get("status") for j, s in workload.final_status.items()
                if states.get(j, {}).get("status") != s}

    def describe(states: Any) -> str:
        bad = wrong(states)
        return f"{len(bad)} jobs not in their final state, e.g. {list(bad.items())[:5]}"

    return wait_until(lambda: worker.table("job_state"), timeout=timeout, interval=1.0,
                      what="every job in its final state", accept=lambda states: not wrong(states),
                      ignore=(OSError,), describe=describe, diagnostics=worker.log_tail)
