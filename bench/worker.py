"""A real ``python -m app.ops.cli worker`` subprocess with the run's isolated settings.

Started the way the integration tests start workers (tests/conftest.py ``WorkerProcess``):
own app id, topic prefix, data dir and web port, RocksDB store; ready once its web server
answers ``GET /api/jobs/-`` with 404 from the table (recovered and assigned).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.core.settings import Settings
from app.ops.worker_process import WorkerProcess, WorkerProcessError, free_port
from bench.context import BenchError


class BenchWorker:
    """The run's worker: a :class:`app.ops.worker_process.WorkerProcess` with isolated settings."""

    def __init__(self, *, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.log_path = workdir / "worker.log"
        env = dict(os.environ)
        env.update(
            {
                "COSMIC_APP_ID": settings.app_id,
                "COSMIC_TOPIC_PREFIX": settings.topic_prefix,
                "COSMIC_DATA_DIR": str(workdir / "worker-data"),
                "COSMIC_STACK_HOME": str(settings.stack_dir),
                "COSMIC_WEB_HOST": "127.0.0.1",
                "COSMIC_WEB_PORT": str(self.port),
                "COSMIC_STORE": "rocksdb://",
                "COSMIC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "COSMIC_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
                "COSMIC_RABBITMQ_URL": settings.rabbitmq_url,
                "COSMIC_REPLICATION_FACTOR": str(settings.replication_factor),
            }
        )
        self.env = env
        self.process = WorkerProcess(env=env, log_path=self.log_path)
        self.base_url = self.process.base_url

    def start(self, *, timeout: float = 120.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        begin = time.monotonic()
        try:
            self.process.start(timeout=timeout)
        except WorkerProcessError as exc:
            raise BenchError(str(exc)) from exc
        return time.monotonic() - begin

    def stop(self, *, timeout: float = 60.0) -> None:
        self.process.stop(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)
