"""Apache Kafka in KRaft mode (no ZooKeeper), from Maven Central jars and the machine's Java."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import StackError
from app.core.settings import PROJECT_ROOT
from app.ops.stack.process import (
    MARKER_ENV,
    find_marked_pids,
    pid_alive,
    port_accepts,
    require_tool,
    run_checked,
    spawn_detached,
    stack_marker,
    terminate,
    wait_until,
)

#: The broker version the local stack runs. 4.x works with aiokafka 0.14.0 and
#: faust-streaming 0.15.3 (the integration suite runs against it).
KAFKA_VERSION = "4.3.1"
POM_PATH = PROJECT_ROOT / "compose" / "local" / "pom.xml"
#: Broker i (0-based) listens on base_port + PORT_STEP * i; its controller on that + 1.
PORT_STEP = 10

JAVA_HINT = "Install a Java 17+ runtime, e.g. `apt-get install -y openjdk-17-jre-headless`."
MAVEN_HINT = "Install Maven, e.g. `apt-get install -y maven` (it fetches the Kafka jars from Maven Central)."


def new_cluster_id() -> str:
    """A random KRaft cluster id as Kafka's own ``Uuid.randomUuid()`` makes them: URL-safe
    base64 of 16 random bytes, never starting with "-" (a command line would take it for an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True, kw_only=True)
class KafkaNode:
    """One combined broker+controller process of the local cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    home: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def marker(self) -> str:
        return stack_marker(service="kafka", home=self.home)


class KafkaCluster:
    """A local KRaft cluster of 1 or 3 nodes whose data survives ``stop``/``start``."""

    def __init__(
        self, *, root: Path, host: str, base_port: int, brokers: int,
        version: str = KAFKA_VERSION, heap: str | None = None,
    ) -> None:
        if brokers not in (1, 3):
            raise StackError(f"--brokers must be 1 or 3, got {brokers}")
        self.root = root
        self.version = version
        self.brokers = brokers
        self.heap = heap or ("1g" if brokers == 1 else "768m")
        self.cluster_dir = root / f"{brokers}-broker"
        self.nodes = [
            KafkaNode(
                node_id=i + 1,
                host=host,
                port=base_port + PORT_STEP * i,
                controller_port=base_port + PORT_STEP * i + 1,
                home=self.cluster_dir / f"node-{i + 1}",
            )
            for i in range(brokers)
        ]

    # -- addresses -------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def ports(self, *, exclude: set[int] = frozenset()) -> dict[str, int]:
        """Purpose → port of every node not in ``exclude`` (node ids)."""
        ports: dict[str, int] = {}
        for node in self.nodes:
            if node.node_id in exclude:
                continue
            ports[f"kafka node {node.node_id} client"] = node.port
            ports[f"kafka node {node.node_id} controller"] = node.controller_port
        return ports

    @property
    def libs_dir(self) -> Path:
        return self.root / f"libs-{self.version}"

    # -- install ---------------------------------------------------------------------------
    def fetch_jars(self) -> Path:
        """Copy the broker's runtime jars from Maven Central (cached in ~/.m2) once."""
        complete = self.libs_dir / ".complete"
        if complete.exists():
            return self.libs_dir
        mvn = require_tool(name="mvn", hint=MAVEN_HINT)
        require_tool(name="java", hint=JAVA_HINT)
        self.libs_dir.mkdir(parents=True, exist_ok=True)
        run_checked(
            argv=[
                mvn, "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-Dkafka.version={self.version}",
                f"-DoutputDirectory={self.libs_dir}",
            ],
            timeout=600,
            what=f"Fetching Kafka {self.version} jars with Maven",
        )
        if not (self.libs_dir / f"kafka_2.13-{self.version}.jar").exists():
            raise StackError(f"Maven ran but kafka_2.13-{self.version}.jar is not in {self.libs_dir}")
        complete.write_text(self.version)
        return self.libs_dir

    def render_config(self, node: KafkaNode) -> str:
        """The server.properties of ``node``."""
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        replicas = min(3, self.brokers)
        min_isr = 2 if self.brokers >= 3 else 1
        lines = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": node.data_dir,
            "num.partitions": 1,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            # Topics are created on purpose (cosmic topics ensure / Faust), never by accident:
            # an auto-created source topic with the wrong partition count breaks co-partitioning.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.check.interval.ms": 60000,
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def cluster_id(self) -> str:
        path = self.cluster_dir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cid = new_cluster_id()
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(cid)
        return cid

    def _java_argv(self, *, main: str, args: list[str], heap: str, marker: str) -> list[str]:
        java = require_tool(name="java", hint=JAVA_HINT)
        return [
            java, "-Xms256m", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            # slf4j-simple (the binding fetched with the jars): a timestamp on every log line
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            f"-D{marker}", "-cp", f"{self.libs_dir}/*", main, *args,
        ]

    def prepare(self) -> None:
        """Write configs and format storage of nodes that have never been formatted."""
        self.fetch_jars()
        cid = self.cluster_id()
        for node in self.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(self.render_config(node))
            if (node.data_dir / "meta.properties").exists():
                continue
            run_checked(
                argv=self._java_argv(
                    main="kafka.tools.StorageTool",
                    # "--cluster-id=" keeps an id starting with "-" (one in 64 random ones, and
                    # any written by an older version) from being read as an option.
                    args=["format", f"--cluster-id={cid}", "-c", str(node.config_path), "--ignore-formatted"],
                    heap="256m", marker=stack_marker(service="kafka-format", home=node.home),
                ),
                timeout=120,
                what=f"Formatting Kafka storage of node {node.node_id}",
            )

    # -- run -------------------------------------------------------------------------------
    def running_pids(self) -> dict[int, int]:
        """node_id → pid for every node process of this cluster that is alive."""
        found: dict[int, int] = {}
        for node in self.nodes:
            pids = find_marked_pids(marker=node.marker)
            if pids:
                found[node.node_id] = pids[0]
        return found

    def start(self, *, timeout: float = 90.0) -> None:
        running = self.running_pids()
        env = dict(os.environ)
        env[MARKER_ENV] = str(self.cluster_dir)
        started: dict[int, int] = {}
        for node in self.nodes:
            if node.node_id in running:
                continue
            started[node.node_id] = spawn_detached(
                argv=self._java_argv(
                    main="kafka.Kafka", args=[str(node.config_path)], heap=self.heap,
                    marker=node.marker,
                ),
                log_path=node.log_path,
                env=env,
                cwd=node.home,
            )
        for node in self.nodes:
            wait_until(
                what=f"Kafka node {node.node_id} on {node.address}",
                check=lambda node=node: port_accepts(host=node.host, port=node.port),
                timeout=timeout,
                log_path=node.log_path,
                pid=started.get(node.node_id) or running.get(node.node_id),
            )
        wait_until(
            what=f"Kafka cluster of {self.brokers} broker(s) at {self.bootstrap}",
            check=lambda: self.live_broker_count() == self.brokers,
            timeout=timeout,
            log_path=self.nodes[0].log_path,
        )

    def stop(self, *, timeout: float = 60.0) -> list[int]:
        """Stop every node of this cluster (controlled shutdown on SIGTERM)."""
        stopped = []
        for node_id, pid in sorted(self.running_pids().items(), reverse=True):
            terminate(pid=pid, timeout=timeout)
            stopped.append(pid)
        return stopped

    def kill_node(self, *, node_id: int) -> int | None:
        """SIGKILL one node (fault injection); returns its pid or None if it was not running."""
        pid = self.running_pids().get(node_id)
        if pid:
            os.kill(pid, 9)
            for _ in range(100):
                if not pid_alive(pid):
                    break
                time.sleep(0.05)
        return pid

    def live_broker_count(self) -> int:
        """How many brokers the cluster's metadata lists (0 when unreachable)."""
        return asyncio.run(_describe_broker_count(bootstrap=self.bootstrap))


async def _describe_broker_count(*, bootstrap: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), timeout=6)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout=6)
        return len(cluster.get("brokers", []))
    except Exception:  # noqa: BLE001 - unreachable means zero live brokers
        return 0
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001
            pass
