"""`cosmic stack up | down | status` as a user runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.core.settings import PROJECT_ROOT
from app.ops.stack.process import find_marked_pids, port_is_free
from support.polling import wait_until


def _cosmic(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.ops.cli", *args], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=timeout,
    )


def test_status_of_the_running_stack_names_versions_and_logs(stack):
    out = _cosmic("stack", "status", env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"kafka            {stack.kafka_version}" in out.stdout
    assert "rabbitmq" in out.stdout and stack.rabbitmq_version in out.stdout
    assert out.stdout.count("healthy") == 3
    assert "log: " in out.stdout


def test_up_twice_is_not_an_error(stack):
    out = _cosmic("stack", "up", env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kafka: already running" in out.stdout
    assert "rabbitmq: already running" in out.stdout


async def _create_topic(bootstrap: str, name: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, 1, 1)])
        return await admin.list_topics()
    finally:
        await admin.close()


def test_a_separate_stack_goes_up_twice_keeps_data_and_goes_down_cleanly(tmp_path: Path):
    """A second stack on its own ports and data dir: up, up again, status, down, up (data kept), down."""
    env = {
        **os.environ,
        "COSMIC_DATA_DIR": str(tmp_path / "data"),
        "COSMIC_KAFKA_BOOTSTRAP": "127.0.0.1:19192",
        "COSMIC_RABBITMQ_URL": "amqp://svc:not-guest@127.0.0.1:5772/jobs",
        "COSMIC_SCHEMA_REGISTRY_URL": "http://127.0.0.1:18181",
    }
    ports = [19192, 19193, 5772, 15772, 25772, 18181]
    stack_root = str(tmp_path / "data" / "stack")
    try:
        first = _cosmic("stack", "up", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "kafka: up in" in first.stdout and "rabbitmq: up in" in first.stdout

        again = _cosmic("stack", "up", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout

        status = _cosmic("stack", "status", env=env)
        assert status.returncode == 0, status.stdout
        assert "127.0.0.1:19192" in status.stdout and "amqp://127.0.0.1:5772" in status.stdout

        # The URL's user and vhost were created on the private RabbitMQ node.
        import aio_pika

        async def amqp_roundtrip() -> None:
            connection = await aio_pika.connect(env["COSMIC_RABBITMQ_URL"], timeout=10)
            await connection.close()

        asyncio.run(amqp_roundtrip())

        assert "survivor" in asyncio.run(_create_topic("127.0.0.1:19192", "survivor"))

        down = _cosmic("stack", "down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert find_marked_pids(marker=stack_root) == []
        assert all(port_is_free(host="127.0.0.1", port=p) for p in ports)
        status_down = _cosmic("stack", "status", env=env)
        assert status_down.returncode != 0
        assert "DOWN" in status_down.stdout

        # Data survives down/up: the topic is still there.
        up_again = _cosmic("stack", "up", env=env)
        assert up_again.returncode == 0, up_again.stdout + up_again.stderr
        assert "survivor" in asyncio.run(_create_topic("127.0.0.1:19192", "other"))
    finally:
        final = _cosmic("stack", "down", env=env)
        assert final.returncode == 0, final.stdout + final.stderr
    assert find_marked_pids(marker=stack_root) == []
    assert all(port_is_free(host="127.0.0.1", port=p) for p in ports)


def test_port_taken_by_a_stranger_fails_fast_with_its_name(tmp_path: Path):
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        env = {**os.environ, "COSMIC_DATA_DIR": str(tmp_path / "d"), "COSMIC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
        out = _cosmic("stack", "up", env=env, timeout=60)
    assert out.returncode != 0
    assert f"port {port}" in out.stderr and "already in use" in out.stderr


def test_the_readme_run_command_brings_up_a_worker_and_the_demo(worker_env):
    """`cosmic run` (what ./scripts/run.sh runs): stack, topics, worker, demo events, URLs."""
    out = _cosmic("run", "--jobs", "2", env=worker_env, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Cosmic Horizons events is running:" in out.stdout
    assert f"http://127.0.0.1:{worker_env['COSMIC_WEB_PORT']}/api/jobs/<job_id>" in out.stdout
    assert f"live dashboard       http://127.0.0.1:{worker_env['COSMIC_WEB_PORT']}/#token=ey" in out.stdout
    assert "publisher token      ey" in out.stdout  # the demo publishes with it through POST /api/events
    assert out.stdout.count(" published (") == 2
    assert out.stdout.count(" applied by the worker") == 2
    tables = _cosmic("tables", "--mode", "offline", env=worker_env)
    assert tables.returncode == 0
    rows = {line.split()[0]: line for line in tables.stdout.splitlines()}
    assert {"job_state", "job_counts", "active_jobs", "audit_chain"} <= set(rows)
    assert "keys=2" in rows["job_state"], rows["job_state"]


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_main_job_stops_on_ctrl_c_with_every_process_of_its_group(worker_env, tmp_path: Path, sig):
    """`cosmic run` in its own session, as a terminal runs it; the signal goes to the whole
    group (a terminal's Ctrl-C): the demo and the worker stop within 30 s, exit status 0."""
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.ops.cli", "run"], env=worker_env, cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def publishing() -> bool:  # the demo is publishing (its first line: the runtime history it published)
            started = "demo: published" in log.read_text(errors="replace")
            assert started or proc.poll() is None, log.read_text(errors="replace")[-3000:]
            return started

        wait_until(publishing, timeout=240, what="the demo publishing",
                   diagnostics=lambda: log.read_text(errors="replace")[-3000:])
        members = _group_members(proc.pid)
        assert len(members) >= 2, members  # cosmic run and its worker
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]
        wait_until(lambda: not _group_members(proc.pid), timeout=5, interval=0.2, what="the process group gone",
                   fail=False)
        assert _group_members(proc.pid) == [], "processes of the main job outlived it"
        printed = log.read_text(errors="replace")
        published = printed.count("demo: ")
        time.sleep(3)
        assert log.read_text(errors="replace").count("demo: ") == published, "the demo kept publishing"
    finally:
        if proc.poll() is None or _group_members(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
