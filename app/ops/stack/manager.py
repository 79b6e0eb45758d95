"""``cosmic stack up | down | status``: bring the whole local stack up, down, or report it."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.core.errors import StackError
from app.core.settings import Settings
from app.ops.stack.kafka import JAVA_HINT, KAFKA_VERSION, MAVEN_HINT, KafkaCluster
from app.ops.stack.process import ensure_ports_free, find_marked_pids, require_tool, terminate
from app.ops.stack.rabbitmq import RabbitEndpoint, RabbitNode, stop_epmd_if_idle
from app.ops.stack.registry import RegistryProcess


@dataclass(frozen=True, kw_only=True)
class ComponentStatus:
    name: str
    version: str
    address: str
    healthy: bool
    detail: str
    log: str

    def line(self) -> str:
        health = "healthy" if self.healthy else "DOWN"
        return f"{self.name:<16} {self.version:<10} {self.address:<34} {health:<8} {self.detail}  log: {self.log}"


class StackManager:
    """Starts and stops the local Kafka, RabbitMQ and registry processes under ``data_dir/stack``."""

    def __init__(self, *, settings: Settings, echo: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.root = settings.stack_dir
        self.echo = echo
        host, port = _first_host_port(settings.kafka_bootstrap)
        self.kafka_host, self.kafka_port = host, port
        self.rabbit = RabbitNode(
            root=self.root / "rabbitmq", endpoint=RabbitEndpoint.from_url(settings.rabbitmq_url)
        )

    # -- pieces ----------------------------------------------------------------------------
    def kafka(self, *, brokers: int) -> KafkaCluster:
        return KafkaCluster(
            root=self.root / "kafka", host=self.kafka_host, base_port=self.kafka_port,
            brokers=brokers, version=KAFKA_VERSION,
        )

    def registry(self, *, brokers: int) -> RegistryProcess:
        return RegistryProcess(
            root=self.root / "registry", url=self.settings.schema_registry_url,
            bootstrap=self.kafka(brokers=brokers).bootstrap, replication_factor=brokers,
        )

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def running_brokers(self) -> int | None:
        """1 or 3 when a cluster of that size has live processes, else None."""
        for brokers in (1, 3):
            if self.kafka(brokers=brokers).running_pids():
                return brokers
        return None

    # -- commands --------------------------------------------------------------------------
    def check_tools(self) -> None:
        require_tool(name="java", hint=JAVA_HINT)
        require_tool(name="mvn", hint=MAVEN_HINT)
        self.rabbit.sbin  # noqa: B018 - raises MissingToolError naming the package

    def up(self, *, brokers: int | None = None, timeout: float = 120.0) -> None:
        """Start what is not running. ``brokers``: 1 or 3; None = the running cluster's size, else 1."""
        self.check_tools()
        running = self.running_brokers()
        if brokers is None:
            brokers = running or 1
        if running is not None and running != brokers:
            raise StackError(
                f"a {running}-broker Kafka cluster of this stack is running; "
                f"run `cosmic stack down` before `cosmic stack up --brokers {brokers}`"
            )
        host = self.kafka_host
        kafka = self.kafka(brokers=brokers)
        start_kafka = len(kafka.running_pids()) != brokers
        start_rabbit = not self.rabbit.running_pid()
        if start_kafka:
            ensure_ports_free(host=host, ports=kafka.ports(exclude=set(kafka.running_pids())))
        else:
            self.echo(f"kafka: already running ({brokers} broker(s) at {kafka.bootstrap})")
        if start_rabbit:
            ensure_ports_free(host=self.rabbit.endpoint.host, ports=self.rabbit.ports())
        else:
            self.echo(f"rabbitmq: already running ({self.rabbit.nodename} on port {self.rabbit.amqp_port})")
        # RabbitMQ starts while Kafka does (neither needs the other; 8 s of a 15-40 s start).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rabbitmq-start") as pool:
            rabbit = pool.submit(self._start_rabbit, timeout=timeout) if start_rabbit else None
            try:
                if start_kafka:
                    self.echo(f"kafka: starting Kafka {kafka.version} ({brokers} broker(s), KRaft) at {kafka.bootstrap} …")
                    started = time.monotonic()
                    kafka.prepare()
                    kafka.start(timeout=timeout)
                    self.echo(f"kafka: up in {time.monotonic() - started:.1f} s")
            finally:
                if rabbit is not None:
                    rabbit.result()  # its error, else Kafka's (raised on leaving this block)

        registry = self.registry(brokers=brokers)
        if not registry.available():
            self.echo("schema-registry: not part of the stack yet (placeholder)")
        elif registry.running_pid():
            self.echo(f"schema-registry: already running ({registry.url})")
        else:
            ensure_ports_free(host=registry.host, ports=registry.ports())
            self.echo(f"schema-registry: starting on {registry.url} …")
            registry.start(timeout=timeout)
            self.echo("schema-registry: up")

        self.root.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(
            json.dumps({"brokers": brokers, "kafka_version": kafka.version}, indent=2)
        )

    def _start_rabbit(self, *, timeout: float) -> None:
        self.echo(f"rabbitmq: starting node {self.rabbit.nodename} on {self.rabbit.endpoint.host}:{self.rabbit.amqp_port} …")
        started = time.monotonic()
        self.rabbit.start(timeout=timeout)
        self.echo(f"rabbitmq: up in {time.monotonic() - started:.1f} s")

    def down(self, *, timeout: float = 60.0) -> None:
        for brokers in (1, 3):
            registry = self.registry(brokers=brokers)
            pid = registry.stop()
            if pid:
                self.echo(f"schema-registry: stopped (pid {pid})")
        pid = self.rabbit.stop(timeout=timeout)
        self.echo(f"rabbitmq: stopped (pid {pid})" if pid else "rabbitmq: was not running")
        for brokers in (1, 3):
            pids = self.kafka(brokers=brokers).stop(timeout=timeout)
            if pids:
                self.echo(f"kafka: stopped {len(pids)} broker(s) (pids {', '.join(map(str, pids))})")
        if stop_epmd_if_idle():
            self.echo("epmd: stopped (no Erlang node left)")
        markers = [self.rabbit.marker]
        for brokers in (1, 3):
            markers += [node.marker for node in self.kafka(brokers=brokers).nodes]
            markers.append(self.registry(brokers=brokers).marker)
        def leftovers() -> list[int]:
            return sorted({pid for marker in markers for pid in find_marked_pids(marker=marker)})

        # Helpers of a stopped server (Erlang's epmd, erl_child_setup, inet_gethost inherit
        # the node's marker) can outlive it by a moment: give them time, then end them.
        deadline = time.monotonic() + 10
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers():
            self.echo(f"stopping leftover process {pid} of the stack")
            terminate(pid=pid, timeout=10)
        if leftovers():
            raise StackError(f"processes of the stack still running after down: {leftovers()}")

    def status(self) -> list[ComponentStatus]:
        brokers = self.running_brokers() or int(self._read_state().get("brokers", 1))
        kafka = self.kafka(brokers=brokers)
        pids = kafka.running_pids()
        live = kafka.live_broker_count() if pids else 0
        statuses = [
            ComponentStatus(
                name="kafka",
                version=kafka.version,
                address=kafka.bootstrap,
                healthy=live == brokers,
                detail=f"{live}/{brokers} broker(s) in metadata, KRaft",
                log=str(kafka.nodes[0].log_path if brokers == 1 else kafka.cluster_dir / "node-*/kafka.log"),
            )
        ]
        rabbit_ok = self.rabbit.healthy()
        management = (
            f"management http://{self.rabbit.endpoint.host}:{self.rabbit.management_port}/"
            if self.rabbit.has_management_plugin() else "no management plugin"
        )
        statuses.append(
            ComponentStatus(
                name="rabbitmq",
                version=self.rabbit.version() if rabbit_ok else "-",
                address=f"amqp://{self.rabbit.endpoint.host}:{self.rabbit.amqp_port}",
                healthy=rabbit_ok,
                detail=f"node {self.rabbit.nodename}, {management}",
                log=str(self.rabbit.log_path),
            )
        )
        registry = self.registry(brokers=brokers)
        if registry.available():
            statuses.append(
                ComponentStatus(
                    name="schema-registry",
                    version="cosmic",
                    address=registry.url,
                    healthy=registry.healthy(),
                    detail="Confluent REST API, schemas in _schemas",
                    log=str(registry.log_path),
                )
            )
        else:
            statuses.append(
                ComponentStatus(
                    name="schema-registry", version="-", address=registry.url, healthy=True,
                    detail="placeholder: provided by the event-contracts issue", log="-",
                )
            )
        return statuses


def _first_host_port(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError as exc:
        raise StackError(f"COSMIC_KAFKA_BOOTSTRAP entry {first!r} is not host:port") from exc

