"""Shared fixtures: the real local stack (session), unique names, worker processes."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Unit tests run the Faust app in-process on the memory store; this must be set before
# app.worker.main is imported. Worker subprocesses get COSMIC_STORE=rocksdb:// explicitly.
os.environ.setdefault("COSMIC_STORE", "memory://")

from app.core.settings import Settings  # noqa: E402
from app.ops.worker_process import WorkerProcess, free_port  # noqa: E402,F401 - re-exported for tests
from support.workers import worker_environment  # noqa: E402

_STACK_SUMMARY: list[str] = []


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
    from app.core.errors import CosmicError
    from app.ops.stack.manager import StackManager

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


#: Every test under tests/<directory> carries the marker of that name (``pytest -m unit``).
_SUITES = ("unit", "integration", "reliability")
_TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    for item in items:
        try:
            suite = Path(str(item.path)).resolve().relative_to(_TESTS_DIR).parts[0]
        except ValueError:
            continue
        if suite in _SUITES:
            item.add_marker(getattr(pytest.mark, suite))


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
    return worker_environment(stack=stack, uid=uid, data_dir=tmp_path / "data", web_port=free_port())


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
        # The test is over: a worker still waiting on Faust's in-flight messages after 20 s
        # (see docs/observability.md, "Faust hazards") is killed rather than waited for.
        worker.stop(timeout=20)
