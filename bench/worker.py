"""A real ``python -m app.cli worker`` subprocess with the run's isolated settings.

Started the way the integration tests start workers (tests/conftest.py ``WorkerProcess``):
own app id, topic prefix, data dir and web port, RocksDB store; ready once its web server
answers ``GET /api/jobs/-`` with 404 from the table (recovered and assigned).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.settings import PROJECT_ROOT, Settings
from bench.context import BenchError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchWorker:
    def __init__(self, *, settings: Settings, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "worker.log"
        self.env = dict(os.environ)
        self.env.update(
            {
                "COSMIC_APP_ID": settings.app_id,
                "COSMIC_TOPIC_PREFIX": settings.topic_prefix,
                "COSMIC_DATA_DIR": str(workdir / "worker-data"),
                "COSMIC_WEB_HOST": "127.0.0.1",
                "COSMIC_WEB_PORT": str(self.port),
                "COSMIC_STORE": "rocksdb://",
                "COSMIC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "COSMIC_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
                "COSMIC_RABBITMQ_URL": settings.rabbitmq_url,
                "COSMIC_REPLICATION_FACTOR": str(settings.replication_factor),
            }
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 120.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        begin = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        deadline = begin + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/api/jobs/-", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return time.monotonic() - begin
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise BenchError(f"worker web server not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, *, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no worker log)"
