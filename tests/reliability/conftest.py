"""Reliability suite: fault injection, fuzzing and access control against the real stack.

Every scenario records what went in and what came out of each sink with :func:`report`;
the terminal summary prints the table (events in, out per sink, lost, duplicated), and the
same rows are written to ``<rootdir>/.data/reliability-report.json`` for docs/benchmarks.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from support.topic_cleanup import delete_topics_of

_ROWS: list["ScenarioReport"] = []


@dataclass
class ScenarioReport:
    """One scenario's accounting. ``sinks`` maps a sink name to
    ``{"out": n, "lost": n, "duplicated": n}``; ``notes`` holds figures such as stall times."""

    scenario: str
    events_in: int
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def sink(self, *, name: str, expected: set[str], seen: list[str]) -> dict[str, int]:
        """Account ``seen`` ids (one per delivery) against ``expected`` ids for sink ``name``."""
        counts: dict[str, int] = {}
        for item in seen:
            counts[item] = counts.get(item, 0) + 1
        row = {
            "out": len(seen),
            "lost": len(expected - counts.keys()),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "unexpected": len(counts.keys() - expected),
        }
        self.sinks[name] = row
        return row


@pytest.fixture(autouse=True)
def _delete_stack_topics(request: pytest.FixtureRequest):  # noqa: ANN202
    """A test that used the shared stack leaves none of its uid topics behind."""
    uses_stack = "stack" in request.fixturenames and "uid" in request.fixturenames
    stack = request.getfixturevalue("stack") if uses_stack else None
    uid = request.getfixturevalue("uid") if uses_stack else None
    yield
    if stack is not None and uid is not None:
        delete_topics_of(bootstrap=stack.kafka_bootstrap, uid=uid)


@pytest.fixture
def report(request: pytest.FixtureRequest):  # noqa: ANN201
    """Make a :class:`ScenarioReport` for this test; it is printed in the run's summary."""

    def make(*, scenario: str, events_in: int) -> ScenarioReport:
        row = ScenarioReport(scenario=scenario, events_in=events_in)
        _ROWS.append(row)
        return row

    return make


def pytest_terminal_summary(terminalreporter, config) -> None:  # noqa: ANN001
    if not _ROWS:
        return
    terminalreporter.section("reliability report")
    terminalreporter.write_line(
        f"{'scenario':<44} {'in':>7}  {'sink':<24} {'out':>7} {'lost':>5} {'dup':>5} {'unexp':>5}"
    )
    for row in _ROWS:
        first = True
        for name, counts in row.sinks.items():
            lead = f"{row.scenario:<44} {row.events_in:>7}" if first else " " * 52
            terminalreporter.write_line(
                f"{lead}  {name:<24} {counts['out']:>7} {counts['lost']:>5} "
                f"{counts['duplicated']:>5} {counts.get('unexpected', 0):>5}"
            )
            first = False
        for key, value in row.notes.items():
            terminalreporter.write_line(f"{'':<52}  {key}: {value}")
    out = Path(str(config.rootpath)) / ".data" / "reliability-report.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([asdict(r) for r in _ROWS], indent=2))
        terminalreporter.write_line(f"written to {out}")
    except OSError as exc:
        terminalreporter.write_line(f"could not write {out}: {exc}")


@pytest.fixture(scope="module")
def live_worker(request: pytest.FixtureRequest, stack, tmp_path_factory):  # noqa: ANN001, ANN201
    """One isolated worker for the whole module (fuzzing and access control): its own uuid topic
    prefix and app id, a random JWT secret, env overrides from the module's ``LIVE_WORKER_ENV``.
    Log records of the test process are collected meanwhile; the uuid topics are deleted at the end."""
    import logging
    import uuid

    from access_support import LiveWorker
    from support.workers import worker_environment
    from support.topic_cleanup import delete_topics_of

    from app.ops.worker_process import free_port

    uid = uuid.uuid4().hex[:12]
    home = tmp_path_factory.mktemp(f"live-{uid}")
    env = worker_environment(stack=stack, uid=uid, data_dir=home / "data", web_port=free_port(),
                             **getattr(request.module, "LIVE_WORKER_ENV", {}))
    live = LiveWorker(uid=uid, env=env, log_path=home / "worker.log")
    root = logging.getLogger()
    level = root.level
    root.addHandler(live.logs)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        live.process.start(timeout=180)
        yield live
    finally:
        live.process.stop()
        root.removeHandler(live.logs)
        root.setLevel(level)
        delete_topics_of(bootstrap=stack.kafka_bootstrap, uid=uid)
