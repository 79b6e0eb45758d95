"""The schema registry of the local stack: the project's Confluent-compatible server
(``python -m app.ops.registry``) storing schemas in Kafka's ``_schemas`` topic."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from app.core.settings import PROJECT_ROOT
from app.ops.stack.process import (
    MARKER_ENV,
    find_marked_pids,
    port_accepts,
    spawn_detached,
    stack_marker,
    terminate,
    wait_until,
)


class RegistryProcess:
    def __init__(self, *, root: Path, url: str, bootstrap: str, replication_factor: int = 1) -> None:
        """``replication_factor``: of the ``_schemas`` topic — the local cluster's size, so a
        one-broker stack works whatever ``COSMIC_REPLICATION_FACTOR`` the environment holds."""
        parts = urlsplit(url)
        self.replication_factor = replication_factor
        self.root = root
        self.url = url.rstrip("/")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8081
        self.bootstrap = bootstrap

    @staticmethod
    def available() -> bool:
        """False until the event-contracts work ships ``app.ops.registry``."""
        try:
            return importlib.util.find_spec("app.ops.registry.__main__") is not None
        except ImportError:
            return False

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    @property
    def marker(self) -> str:
        return stack_marker(service="registry", home=self.root)

    def ports(self) -> dict[str, int]:
        return {"schema registry": self.port}

    def running_pid(self) -> int | None:
        pids = find_marked_pids(marker=self.marker)
        return pids[0] if pids else None

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running_pid():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[MARKER_ENV] = self.marker
        pid = spawn_detached(
            argv=[
                sys.executable, "-m", "app.ops.registry", "--host", self.host, "--port", str(self.port),
                "--bootstrap", self.bootstrap, "--replication-factor", str(self.replication_factor),
            ],
            log_path=self.log_path,
            env=env,
            cwd=PROJECT_ROOT,
        )
        wait_until(
            what=f"schema registry on {self.url}", check=self.healthy, timeout=timeout,
            log_path=self.log_path, pid=pid,
        )

    def stop(self, *, timeout: float = 20.0) -> int | None:
        pid = self.running_pid()
        if pid:
            terminate(pid=pid, timeout=timeout)
        return pid

    def healthy(self) -> bool:
        if not port_accepts(host=self.host, port=self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=5) as response:
                return isinstance(json.loads(response.read()), list)
        except Exception:  # noqa: BLE001
            return False
