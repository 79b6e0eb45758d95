"""Shared fixtures: the real local stack (session), unique names, worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Unit tests run the Faust app in-process on the memory store; this must be set before
# app.main is imported. Worker subprocesses get COSMIC_STORE=rocksdb:// explicitly.
os.environ.setdefault("COSMIC_STORE", "memory://")

from app.settings import PROJECT_ROOT, Settings  # noqa: E402

_STACK_SUMMARY: list[str] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    settings: Settings
    kafka_bootstrap: str
    rabbitmq_url: str
    registry_url: str
    kafka_version: str
    rabbitmq_version: str


@pytest.fixture(scope="session")
def stack() -> Stack:
    """The real local stack: reused if it runs, else started (and stopped at the end).

    If it cannot start, every test using it fails with the servers' log tail — never skips.
    """
    from app.errors import CosmicError
    from app.stack.manager import StackManager

    settings = Settings.from_env()
    manager = StackManager(settings=settings, echo=lambda line: print(f"[stack] {line}", flush=True))
    started = False
    try:
        before = manager.status()
        if not all(s.healthy for s in before):
            brokers = int(os.environ.get("COSMIC_TEST_BROKERS", "1"))
            manager.up(brokers=brokers)
            # Stop it again at the end only if this run started all of it: a stack somebody
            # else had (partly) running is left running.
            started = not any(s.healthy for s in before if s.name in ("kafka", "rabbitmq"))
        statuses = {s.name: s for s in manager.status()}
    except CosmicError as exc:
        pytest.fail(f"the local stack could not start: {exc}", pytrace=False)
    down = [s.line() for s in statuses.values() if not s.healthy]
    if down:
        pytest.fail("local stack unhealthy:\n" + "\n".join(down), pytrace=False)
    info = Stack(
        settings=settings,
        kafka_bootstrap=settings.kafka_bootstrap,
        rabbitmq_url=settings.rabbitmq_url,
        registry_url=settings.schema_registry_url,
        kafka_version=statuses["kafka"].version,
        rabbitmq_version=statuses["rabbitmq"].version,
    )
    _STACK_SUMMARY[:] = [line.line() for line in statuses.values()]
    yield info
    if started and not os.environ.get("COSMIC_KEEP_STACK"):
        manager.down()


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if _STACK_SUMMARY:
        terminalreporter.section("local stack used by this run")
        for line in _STACK_SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def uid() -> str:
    """A short unique id for topic, group, queue and app names."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def worker_env(tmp_path: Path, uid: str, stack: Stack) -> dict[str, str]:
    """Environment of an isolated worker: own app id (group, changelogs), topic prefix, data dir, port."""
    env = dict(os.environ)
    env.update(
        {
            "COSMIC_APP_ID": f"cosmic-test-{uid}",
            "COSMIC_TOPIC_PREFIX": f"{uid}-",
            "COSMIC_DATA_DIR": str(tmp_path / "data"),
            "COSMIC_STACK_HOME": str(stack.settings.stack_dir),
            "COSMIC_WEB_PORT": str(free_port()),
            "COSMIC_STORE": "rocksdb://",
            "COSMIC_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "COSMIC_JWT_SECRET": f"test-secret-{uid}-{uuid.uuid4().hex}",
        }
    )
    return env


class WorkerProcess:
    """A real ``cosmic worker`` subprocess."""

    def __init__(self, *, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{env['COSMIC_WEB_PORT']}"

    def start(self, *, timeout: float = 120.0) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/api/jobs/-", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return self  # answered from the table: recovered and assigned
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker web not up in {timeout} s:\n{self.log_tail()}")

    def operator_token(self) -> str:
        from app.auth import mint_token

        return mint_token(settings=Settings.from_env(environ=self.env), sub="test-operator", role="operator")

    def get_json(self, path: str, *, operator: bool = False) -> tuple[int, object]:
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

    def table(self, name: str) -> dict:
        """The worker's whole table ``name`` (operator API), key → value."""
        request = urllib.request.Request(f"{self.base_url}/api/tables/{name}")
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
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def worker_factory(worker_env: dict[str, str], tmp_path: Path):
    """Start workers sharing one isolated environment; all are stopped at teardown."""
    workers: list[WorkerProcess] = []

    def make(**overrides: str) -> WorkerProcess:
        env = {**worker_env, **overrides}
        worker = WorkerProcess(env=env, log_path=tmp_path / f"worker-{len(workers) + 1}.log")
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
