"""A real ``cosmic worker`` subprocess: start it, wait until it serves from its tables, query
it, stop or kill it. Used by ``cosmic run``, the benchmarks and the integration tests."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from app.core.errors import CosmicError
from app.core.settings import PROJECT_ROOT, Settings


class WorkerProcessError(CosmicError):
    """The worker exited or did not become ready."""


#: Where :func:`free_port` looks: below the kernel's ephemeral range (32768–60999 by default), so
#: that no outgoing connection of any process takes the port between the check and its listener;
#: above the local stack's ports (RabbitMQ's distribution port is 25672).
_PORT_RANGE = (26000, 32768)
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _PORT_RANGE[1]


def free_port(*, host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on now, outside the ephemeral range, and not handed
    out before by this process (a listener started later gets it; ``bind(0)`` would give an
    ephemeral port that an outgoing connection can take before the listener binds it)."""
    low, high = _PORT_RANGE[0], min(_PORT_RANGE[1], _ephemeral_low())
    candidates = [port for port in range(low, high) if port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise WorkerProcessError(f"no free port in {low}–{high - 1} on {host}")


class WorkerProcess:
    """``python -m app.ops.cli worker`` with ``env``; output to ``log_path`` (None: inherited)."""

    def __init__(self, *, env: dict[str, str], log_path: Path | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        settings = Settings.from_env(environ=env)
        self.base_url = f"http://{settings.web_host}:{settings.web_port}"

    def start(self, *, timeout: float = 120.0) -> "WorkerProcess":
        """Start and wait until ready: a job query answered from the tables (404 for a job
        that does not exist; 503 means still recovering or rebalancing)."""
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.ops.cli", "worker"], env=self.env, cwd=PROJECT_ROOT,
                stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=log is not None,
            )
        finally:
            if log:
                log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerProcessError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            # the job view checks readiness (503) before the token: 401 = ready, like 404
            if self.status_of("/api/jobs/-") in (401, 404):
                return self
            time.sleep(0.25)
        self.stop()
        raise WorkerProcessError(f"worker not ready at {self.base_url} in {timeout:.0f} s:\n{self.log_tail()}")

    def status_of(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.base_url}{path}", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def operator_token(self) -> str:
        from app.core.auth import mint_token

        settings = Settings.from_env(environ=self.env)
        return mint_token(settings=settings, sub="operator", role=settings.jwt_operator_role)

    def publisher_token(self) -> str:
        """A token that may ``POST /api/events`` on this worker."""
        from app.core.auth import mint_token

        settings = Settings.from_env(environ=self.env)
        return mint_token(settings=settings, sub="publisher", role=settings.jwt_publisher_role)

    def metric(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s values with ``labels`` on the worker's ``/metrics`` (0 if none)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=30) as response:
            text = response.read().decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    def get_json(self, path: str, *, operator: bool = False) -> tuple[int, Any]:
        """(status, decoded JSON body — or the raw text when the body is not JSON)."""
        request = urllib.request.Request(f"{self.base_url}{path}")
        if operator:
            request.add_header("Authorization", f"Bearer {self.operator_token()}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode(errors="replace")

    def table(self, name: str, *, local: bool = False) -> dict:
        """The group's whole table ``name`` (operator API, gathered from every worker), key →
        value; ``local``: only the partitions this worker holds."""
        request = urllib.request.Request(f"{self.base_url}/api/tables/{name}" + ("?local=true" if local else ""))
        request.add_header("Authorization", f"Bearer {self.operator_token()}")
        with urllib.request.urlopen(request, timeout=60) as response:
            lines = response.read().decode().splitlines()
        return {json.dumps(item["key"]) if not isinstance(item["key"], str) else item["key"]: item["value"]
                for item in map(json.loads, filter(None, lines))}

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        self.stop(sig=signal.SIGKILL, timeout=30)

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None:
            return "(output not captured)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
