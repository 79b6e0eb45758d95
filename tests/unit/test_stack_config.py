"""The local stack's configuration and its bad-input handling, without starting servers."""

import socket
import sys
import time

import pytest

from app.core.errors import MissingToolError, PortInUseError, StackError
from app.core.settings import Settings
from app.ops.stack.kafka import KafkaCluster
from app.ops.stack.manager import StackManager
from app.ops.stack.process import ensure_ports_free, require_tool, spawn_detached, wait_until
from app.ops.stack.rabbitmq import RabbitEndpoint, RabbitNode


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_single_broker_is_kraft_without_auto_created_topics(tmp_path):
    cluster = KafkaCluster(root=tmp_path, host="127.0.0.1", base_port=9092, brokers=1)
    props = _props(cluster.render_config(cluster.nodes[0]))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert "zookeeper.connect" not in props
    assert cluster.bootstrap == "127.0.0.1:9092"


def test_three_brokers_share_a_quorum_and_require_two_in_sync(tmp_path):
    cluster = KafkaCluster(root=tmp_path, host="127.0.0.1", base_port=9092, brokers=3)
    assert cluster.bootstrap == "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"
    configs = [_props(cluster.render_config(node)) for node in cluster.nodes]
    assert {c["controller.quorum.voters"] for c in configs} == {
        "1@127.0.0.1:9093,2@127.0.0.1:9103,3@127.0.0.1:9113"
    }
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    assert all(c["min.insync.replicas"] == "2" for c in configs)
    assert all(c["default.replication.factor"] == "3" for c in configs)
    assert len({c["log.dirs"] for c in configs}) == 3
    assert len(set(cluster.ports().values())) == 6


def test_broker_count_other_than_one_or_three_is_refused(tmp_path):
    with pytest.raises(StackError, match="1 or 3"):
        KafkaCluster(root=tmp_path, host="127.0.0.1", base_port=9092, brokers=2)


def test_rabbit_endpoint_and_ports_follow_the_url(tmp_path):
    ep = RabbitEndpoint.from_url("amqp://svc:p%40ss@127.0.0.1:5772/jobs")
    assert (ep.user, ep.password, ep.vhost, ep.port) == ("svc", "p@ss", "jobs", 5772)
    node = RabbitNode(root=tmp_path, endpoint=ep)
    assert (node.management_port, node.dist_port) == (15772, 25772)
    assert node.nodename == "cosmic-5772@localhost"
    default = RabbitNode(root=tmp_path, endpoint=RabbitEndpoint.from_url("amqp://guest:guest@127.0.0.1:5672/"))
    assert (default.nodename, default.management_port, default.dist_port) == ("cosmic@localhost", 15672, 25672)
    with pytest.raises(StackError, match="amqp"):
        RabbitEndpoint.from_url("http://127.0.0.1:5672/")


def test_missing_tool_names_the_tool_and_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match=r"'java' was not found.*apt-get install"):
        require_tool(name="java", hint="Install a Java 17+ runtime, e.g. `apt-get install -y openjdk-17-jre-headless`.")


def test_manager_reports_missing_java_before_doing_anything(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/nonexistent")
    manager = StackManager(settings=Settings(data_dir=tmp_path), echo=lambda _: None)
    with pytest.raises(MissingToolError, match="java"):
        manager.up()
    assert not (tmp_path / "stack").exists()


def test_port_in_use_is_named_not_waited_on():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 \\(kafka client\\)"):
            ensure_ports_free(host="127.0.0.1", ports={"kafka client": port})
        assert time.monotonic() - started < 5


def test_manager_up_fails_fast_when_the_kafka_port_is_taken(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        manager = StackManager(
            settings=Settings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{port}"), echo=lambda _: None
        )
        with pytest.raises(PortInUseError, match=str(port)):
            manager.up(timeout=5)


def test_a_server_that_exits_early_fails_with_its_log_tail(tmp_path):
    log = tmp_path / "server.log"
    pid = spawn_detached(
        argv=[sys.executable, "-c", "import sys; print('fatal: cannot bind'); sys.exit(3)"],
        log_path=log, env={"PATH": "/usr/bin:/bin"},
    )
    with pytest.raises(StackError, match=r"exited before it became ready(.|\n)*fatal: cannot bind"):
        wait_until(what="test server", check=lambda: False, timeout=30, log_path=log, pid=pid)


def test_a_server_that_never_gets_ready_times_out_with_its_log_tail(tmp_path):
    log = tmp_path / "server.log"
    pid = spawn_detached(
        argv=[sys.executable, "-c", "import time; print('still starting', flush=True); time.sleep(30)"],
        log_path=log, env={"PATH": "/usr/bin:/bin"},
    )
    try:
        started = time.monotonic()
        with pytest.raises(StackError, match=r"did not become ready within 1 s(.|\n)*still starting"):
            wait_until(what="test server", check=lambda: False, timeout=1, log_path=log, pid=pid, interval=0.1)
        assert time.monotonic() - started < 5
    finally:
        import os
        import signal

        os.kill(pid, signal.SIGKILL)


def test_cluster_ids_never_start_with_a_dash_and_are_passed_as_one_argument(tmp_path, monkeypatch):
    import uuid

    from app.ops.stack import kafka

    # 0xf8... encodes to a leading "-": the first draw must be refused, the second kept.
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x00" * 16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    assert kafka.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"

    monkeypatch.undo()
    assert all(not kafka.new_cluster_id().startswith("-") for _ in range(2000))

    # an id stored by an older version may still start with "-": it goes in one "--cluster-id=" argument
    cluster = KafkaCluster(root=tmp_path, host="127.0.0.1", base_port=9092, brokers=1)
    cluster.cluster_dir.mkdir(parents=True)
    (cluster.cluster_dir / "cluster.id").write_text("-AbCdEfGhIjKlMnOpQrStUw\n")
    seen: list[list[str]] = []
    monkeypatch.setattr(kafka.KafkaCluster, "fetch_jars", lambda self: None)
    monkeypatch.setattr(kafka, "require_tool", lambda **_: "java")
    monkeypatch.setattr(kafka, "run_checked", lambda *, argv, **_: seen.append(list(argv)) or "")
    cluster.prepare()
    assert len(seen) == 1
    assert "--cluster-id=-AbCdEfGhIjKlMnOpQrStUw" in seen[0]
    assert "-t" not in seen[0]
