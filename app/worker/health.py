"""This worker's health: the checks behind ``GET /health`` and ``GET /ready``, and the
:class:`HealthReporter` service that publishes a :class:`~app.core.models.SystemHealthReport` to
``system-health`` every ``COSMIC_HEALTH_INTERVAL_SECONDS``.

What is measured, not assumed:

* **Consumer lag** per source partition assigned to this worker: the partition's end offset
  minus the consumer group's committed offset, both asked from the broker (an admin client
  and an offsets-only consumer of this service, independent of Faust's consumer, so a
  stalled Faust consumer cannot stall its own health check).
* **Seconds since the last commit**: a Faust sensor (:class:`CommitTracker`) notes every
  commit that moved a committed offset.
* **Tables recovered**: Faust's recovery state. **Kafka** and the **schema registry**: a
  metadata request and ``GET /subjects`` every interval. **Kafka producer**: the age of its
  oldest unacknowledged batch and whether its sender runs (a stalled producer waits silently;
  its state is logged). **RabbitMQ**: the bridge's connection state (only when the bridge is
  enabled). **Websocket connections**: the gauge the websocket module keeps.

Report ``metrics`` keys (the contract of :mod:`app.core.alert_rules`): ``consumer_lag`` (total),
``consumer_lag_max``, ``consumer_lag:<topic>:<partition>``, ``seconds_since_commit``,
``tables_recovered``, ``kafka_reachable``, ``producer_oldest_batch_seconds``, ``registry_reachable``,
``rabbitmq_connected`` (bridge on only), ``websocket_connections``, ``dlq_events`` (dead letters since start),
``uptime_seconds``, ``health_interval_seconds``; 1/0 for booleans.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import mode
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.sensors import Sensor

from app.core.models import SystemHealthReport
from app.core.timeutil import utc_now
from app.core.topic_specs import unprefixed
from app.worker import observability as metrics
from app.worker.faust_internals.producer_state import ProducerState, producer_state
from app.worker.faust_internals.state import committed_offsets
from app.worker.main import app, settings

logger = logging.getLogger(__name__)

#: This worker's name on ``system-health`` (its Kafka key) and in alert ids.
COMPONENT = f"worker-{socket.gethostname()}-{settings.web_port}"
#: Seconds a network probe may take.
PROBE_TIMEOUT = 10.0
#: A producer batch unacknowledged this long (or a stopped sender) fails readiness and is logged
#: with the producer's state: Kafka takes no record from this worker.
PRODUCER_STALL_SECONDS = 30.0
STARTED_AT = time.monotonic()


def probe_max_age() -> float:
    """A network probe older than this no longer counts (the reporter is stuck or stopped)."""
    return max(3 * settings.health_interval_seconds, 30.0) + PROBE_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class Check:
    """One health check: ok or not, a readable detail, the error when there is one."""

    name: str
    ok: bool
    detail: str
    error: str | None = None
    checked_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "error": self.error,
                "checked_at": round(self.checked_at, 3), "age_seconds": round(max(time.time() - self.checked_at, 0.0), 3)}


class CommitTracker(Sensor):
    """Notes when a Faust commit moved this worker's committed offsets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created_at = time.monotonic()
        self.last_commit: float | None = None
        self.commits = 0

    def on_commit_initiated(self, consumer: Any) -> Any:
        return committed_offsets(consumer)

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        after = committed_offsets(consumer)
        if isinstance(state, dict) and after != state:
            self.last_commit = time.monotonic()
            self.commits += 1

    def seconds_since_commit(self) -> float:
        """Since the last commit (since start-up when there was none yet)."""
        return time.monotonic() - (self.last_commit if self.last_commit is not None else self.created_at)


#: The worker's commit tracker. Faust's sensor delegate keeps a per-sensor state for every
#: send and commit in flight and fails (KeyError, crashing the consumer) on one that began
#: before a sensor was added, so it is added here, while the app is declared, never later.
commit_tracker = CommitTracker()
app.sensors.add(commit_tracker)


def tables_check() -> Check:
    recovered = app.tables.recovery.completed.is_set()
    detail = "tables recovered" if recovered else "tables are recovering from their changelogs"
    if app.rebalancing:
        detail += "; the consumer group is rebalancing"
    return Check(name="tables", ok=recovered, detail=detail, error=None if recovered else "recovering")


def producer_check(*, state: ProducerState) -> Check:
    """Faust's Kafka producer delivers: its sender runs and no batch has waited
    :data:`PRODUCER_STALL_SECONDS` for Kafka's acknowledgement."""
    if not state.started:
        return Check(name="kafka_producer", ok=True, detail="not started yet")
    if not state.sender_running:
        return Check(name="kafka_producer", ok=False, detail=state.describe(), error="the producer's sender stopped")
    if state.oldest_batch_seconds >= PRODUCER_STALL_SECONDS:
        return Check(name="kafka_producer", ok=False, detail=state.describe(),
                     error=f"a batch unacknowledged for {state.oldest_batch_seconds:.0f} s")
    return Check(name="kafka_producer", ok=True,
                 detail=f"oldest unacknowledged batch {state.oldest_batch_seconds:.1f} s")


def rabbitmq_check() -> Check | None:
    """The bridge's connection (None when the bridge is disabled)."""
    if not settings.rabbitmq_bridge_enabled:
        return None
    from app.worker.rabbit_bridge import RabbitBridge

    bridge = RabbitBridge.current
    where = settings.rabbitmq_url_redacted
    if bridge is None:
        return Check(name="rabbitmq", ok=False, detail=f"{where}: the bridge has not started", error="not started")
    if bridge.connected:
        return Check(name="rabbitmq", ok=True, detail=f"{where}: connected ({bridge.published} messages confirmed)")
    return Check(name="rabbitmq", ok=False, detail=f"{where}: not connected; bridge publishes wait and retry",
                 error="disconnected")


class HealthReporter(mode.Service):
    """Measures this worker's health every interval and publishes it to ``system-health``."""

    #: The running instance (read by the web views).
    current: "HealthReporter | None" = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.component = COMPONENT
        self.interval = settings.health_interval_seconds
        self.commits = commit_tracker
        self.probes: dict[str, Check] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.reports_sent = 0
        self.last_report: SystemHealthReport | None = None
        self.last_loop_at: float | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._emit_failures = 0
        HealthReporter.current = self

    async def on_start(self) -> None:
        metrics.SECONDS_SINCE_COMMIT.set_function(self.commits.seconds_since_commit)

    async def on_stop(self) -> None:
        await self._close_kafka()
        if self._http is not None:
            await self._http.close()
        if HealthReporter.current is self:
            HealthReporter.current = None

    @mode.Service.task
    async def _report_loop(self) -> None:
        while not self.should_stop:
            try:
                await self.report_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next interval tries again
                logger.exception("health report failed")
            self.last_loop_at = time.monotonic()
            await self.sleep(self.interval)

    # -- probes --------------------------------------------------------------------------
    async def _kafka_clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                        request_timeout_ms=int(PROBE_TIMEOUT * 1000))
            await asyncio.wait_for(admin.start(), PROBE_TIMEOUT)
            self._admin = admin
        if self._offsets is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                        enable_auto_commit=False, request_timeout_ms=int(PROBE_TIMEOUT * 1000))
            await asyncio.wait_for(consumer.start(), PROBE_TIMEOUT)
            self._offsets = consumer
        return self._admin, self._offsets

    async def offsets_consumer(self) -> AIOKafkaConsumer:
        """The reporter's long-lived offsets consumer (no group), started on first use; other
        readers of offsets (``GET /api/stats``) share it instead of connecting per request.
        :meth:`reset_kafka` after it failed."""
        return (await self._kafka_clients())[1]

    async def reset_kafka(self) -> None:
        """Drop the Kafka clients (after a failure): the next use connects anew."""
        await self._close_kafka()

    async def _close_kafka(self) -> None:
        admin, consumer, self._admin, self._offsets = self._admin, self._offsets, None, None
        for client, close in ((admin, "close"), (consumer, "stop")):
            if client is not None:
                try:
                    await asyncio.wait_for(getattr(client, close)(), 5)
                except Exception:  # noqa: BLE001
                    pass

    def _source_partitions(self) -> list[TopicPartition]:
        """Partitions of source topics assigned to this worker (not table changelogs)."""
        try:
            assigned = app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet
            return []
        changelogs = set(app.tables.changelog_topics)
        return sorted((TopicPartition(tp.topic, tp.partition) for tp in assigned
                       if tp.topic not in changelogs and not tp.topic.endswith("-changelog")),
                      key=lambda tp: (tp.topic, tp.partition))

    async def probe_kafka(self) -> Check:
        try:
            admin, consumer = await self._kafka_clients()
            await asyncio.wait_for(admin.describe_cluster(), PROBE_TIMEOUT)
            tps = self._source_partitions()
            lag: dict[tuple[str, int], int] = {}
            if tps:
                ends = await asyncio.wait_for(consumer.end_offsets(tps), PROBE_TIMEOUT)
                committed = await asyncio.wait_for(
                    admin.list_consumer_group_offsets(app.conf.id, partitions=tps), PROBE_TIMEOUT)
                uncommitted = [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
                starts = (await asyncio.wait_for(consumer.beginning_offsets(uncommitted), PROBE_TIMEOUT)
                          if uncommitted else {})
                for tp in tps:
                    position = starts[tp] if tp in starts else committed[tp].offset
                    lag[(tp.topic, tp.partition)] = max(ends[tp] - position, 0)
            self.lag = lag
            return Check(name="kafka", ok=True,
                         detail=f"{settings.kafka_bootstrap} reachable; lag measured on {len(tps)} partitions")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, coordinator moving
            await self._close_kafka()
            return Check(name="kafka", ok=False, detail=f"{settings.kafka_bootstrap} unreachable",
                         error=f"{type(exc).__name__}: {exc}")

    async def _bounded_kafka_probe(self) -> Check:
        """:meth:`probe_kafka` within 2 × PROBE_TIMEOUT in all, so a Kafka outage never holds
        the health loop long enough to fail liveness."""
        try:
            return await asyncio.wait_for(self.probe_kafka(), 2 * PROBE_TIMEOUT)
        except asyncio.TimeoutError:
            await self._close_kafka()
            return Check(name="kafka", ok=False, detail=f"{settings.kafka_bootstrap} unreachable",
                         error=f"no answer in {2 * PROBE_TIMEOUT:.0f} s")

    async def probe_registry(self) -> Check:
        url = settings.schema_registry_url.rstrip("/") + "/subjects"
        try:
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT))
            async with self._http.get(url) as response:
                if response.status == 200:
                    return Check(name="schema_registry", ok=True, detail=f"{settings.schema_registry_url} answered")
                return Check(name="schema_registry", ok=False, detail=f"{url} answered {response.status}",
                             error=f"HTTP {response.status}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            return Check(name="schema_registry", ok=False, detail=f"{settings.schema_registry_url} unreachable",
                         error=f"{type(exc).__name__}: {exc}")

    def probe(self, name: str, *, label: str) -> Check:
        """The latest network probe ``name``, unless missing or too old."""
        check = self.probes.get(name)
        if check is None:
            return Check(name=name, ok=False, detail=f"{label} not probed yet", error="not checked")
        if time.time() - check.checked_at > probe_max_age():
            return Check(name=name, ok=False, detail=f"{label}: last probe is {time.time() - check.checked_at:.0f} s old",
                         error="stale", checked_at=check.checked_at)
        return check

    # -- report --------------------------------------------------------------------------
    def readiness_checks(self) -> dict[str, Check]:
        return readiness_checks(reporter=self)

    def report_metrics(self, checks: dict[str, Check]) -> dict[str, float]:
        from app.worker.streams import DLQ_COUNTS

        values: dict[str, float] = {}
        for (topic, partition), lag in self.lag.items():
            name = unprefixed(topic=topic, prefix=settings.topic_prefix)
            values[f"consumer_lag:{name}:{partition}"] = float(lag)
        values["consumer_lag"] = float(sum(self.lag.values()))
        values["consumer_lag_max"] = float(max(self.lag.values(), default=0))
        values["seconds_since_commit"] = round(self.commits.seconds_since_commit(), 3)
        values["tables_recovered"] = 1.0 if checks["tables"].ok else 0.0
        values["kafka_reachable"] = 1.0 if checks["kafka"].ok else 0.0
        values["producer_oldest_batch_seconds"] = producer_state(app.producer).oldest_batch_seconds
        values["registry_reachable"] = 1.0 if checks["schema_registry"].ok else 0.0
        if "rabbitmq" in checks:
            values["rabbitmq_connected"] = 1.0 if checks["rabbitmq"].ok else 0.0
        values["websocket_connections"] = float(
            metrics.REGISTRY.get_sample_value("cosmic_websocket_connections") or 0.0)
        values["dlq_events"] = float(sum(DLQ_COUNTS.values()))
        values["uptime_seconds"] = round(time.monotonic() - STARTED_AT, 3)
        values["health_interval_seconds"] = float(self.interval)
        return values

    def _update_gauges(self) -> None:
        wanted = set()
        for (topic, partition), lag in self.lag.items():
            name = unprefixed(topic=topic, prefix=settings.topic_prefix)
            wanted.add((name, str(partition)))
            metrics.CONSUMER_LAG.labels(topic=name, partition=str(partition)).set(lag)
        for labels in list(getattr(self, "_gauge_labels", set()) - wanted):
            try:
                metrics.CONSUMER_LAG.remove(*labels)
            except KeyError:
                pass
        self._gauge_labels = wanted

    async def report_once(self) -> SystemHealthReport:
        """Probe, update the gauges, publish one report (a failed publish is logged)."""
        kafka, registry = await asyncio.gather(self._bounded_kafka_probe(), self.probe_registry())
        self.probes["kafka"], self.probes["schema_registry"] = kafka, registry
        self._update_gauges()
        checks = self.readiness_checks()
        values = self.report_metrics(checks)
        failing = [name for name, c in checks.items() if not c.ok]
        if not checks["kafka_producer"].ok:
            logger.warning("Kafka producer stalled: %s", checks["kafka_producer"].detail)
        status = "DOWN" if not checks["kafka"].ok else ("DEGRADED" if failing else "OK")
        report = SystemHealthReport(
            event_id=str(uuid.uuid4()), event_type="SystemHealthReport", timestamp=utc_now(),
            correlation_id=f"health:{self.component}", user_id=None, schema_version=1,
            component=self.component, status=status, metrics=values,
            details=json.dumps({"failing": failing, "checks": {n: c.to_json() for n, c in checks.items()}},
                               separators=(",", ":")),
        )
        self.last_report = report
        if kafka.ok:
            from app.worker.streams import emit

            try:
                await asyncio.wait_for(emit(report), max(PROBE_TIMEOUT, self.interval))
                self.reports_sent += 1
                self._emit_failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka trouble: next interval
                self._emit_failures += 1
                if self._emit_failures <= 3 or self._emit_failures % 20 == 0:
                    logger.warning("health report not published (%s: %s)", type(exc).__name__, exc)
        return report


def readiness_checks(*, reporter: HealthReporter | None) -> dict[str, Check]:
    """Tables, Kafka, the schema registry and (bridge on) RabbitMQ, by name."""
    checks = {"tables": tables_check()}
    if reporter is None:
        missing = Check(name="reporter", ok=False, detail="the health reporter has not started yet", error="starting")
        checks["kafka"] = Check(name="kafka", ok=False, detail=missing.detail, error=missing.error)
        checks["schema_registry"] = Check(name="schema_registry", ok=False, detail=missing.detail, error=missing.error)
    else:
        checks["kafka"] = reporter.probe("kafka", label=f"Kafka at {settings.kafka_bootstrap}")
        checks["schema_registry"] = reporter.probe(
            "schema_registry", label=f"schema registry at {settings.schema_registry_url}")
    checks["kafka_producer"] = producer_check(state=producer_state(app.producer))
    rabbit = rabbitmq_check()
    if rabbit is not None:
        checks["rabbitmq"] = rabbit
    return checks


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, JSON body) of ``GET /ready``."""
    checks = readiness_checks(reporter=HealthReporter.current)
    ready = all(c.ok for c in checks.values())
    return ready, {
        "status": "ready" if ready else "not ready",
        "component": COMPONENT,
        "failing": [name for name, c in checks.items() if not c.ok],
        "checks": {name: c.to_json() for name, c in checks.items()},
    }


def liveness() -> tuple[bool, dict[str, Any]]:
    """(alive, JSON body) of ``GET /health``: the process works (it answers, it has not
    crashed, its health loop runs); dependencies do not count here — see ``/ready``."""
    checks: dict[str, Check] = {}
    crashed = getattr(app, "crash_reason", None)
    checks["worker"] = Check(
        name="worker", ok=crashed is None and not app.should_stop,
        detail="running" if crashed is None and not app.should_stop else "stopping or crashed",
        error=repr(crashed) if crashed is not None else None)
    reporter = HealthReporter.current
    if reporter is None:
        checks["health_loop"] = Check(name="health_loop", ok=True, detail="starting (tables recovering)")
    elif reporter.last_loop_at is None:
        checks["health_loop"] = Check(name="health_loop", ok=True, detail="first report in progress")
    else:
        age = time.monotonic() - reporter.last_loop_at
        ok = age <= probe_max_age() + reporter.interval
        checks["health_loop"] = Check(
            name="health_loop", ok=ok, detail=f"last health report {age:.1f} s ago ({reporter.reports_sent} published)",
            error=None if ok else "the health loop is stuck")
    alive = all(c.ok for c in checks.values())
    return alive, {
        "status": "alive" if alive else "unhealthy",
        "component": COMPONENT,
        "uptime_seconds": round(time.monotonic() - STARTED_AT, 3),
        "checks": {name: c.to_json() for name, c in checks.items()},
    }


app.service(HealthReporter)
