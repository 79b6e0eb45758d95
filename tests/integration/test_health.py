"""/health, /ready and the health alerts against a real worker: stopping RabbitMQ turns /ready
to 503 and raises a FIRING ``component_down`` SystemAlert on system-health; starting it
again gives 200 and a RESOLVED alert with the same alert_id.

This stops the shared local RabbitMQ node like tests/integration/test_rabbit_outage.py does
(and always starts it again, in a finally); the outage is kept under 30 s.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.core.codecs import Codecs
from app.core.settings import Settings
from support.polling import wait_until_async
from support.rabbit import vhost  # noqa: F401 - fixture

DETECT_S = 15.0
MAX_OUTAGE_S = 25.0


class AlertTail:
    """Every SystemAlert on ``system-health`` from the beginning, with when it was seen."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codecs(settings=settings).for_topic("system-health")
        self.alerts: list[tuple[float, object]] = []
        self.reports = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "AlertTail":
        topic = self.settings.topic_prefix + "system-health"
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()
        self._consumer.assign([TopicPartition(topic, p) for p in range(3)])
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = await asyncio.to_thread(self.codec.decode, record.value)
                    if event.event_type == "SystemAlert":
                        self.alerts.append((time.monotonic(), event))
                    else:
                        self.reports += 1

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._consumer.stop()

    def find(self, *, state: str, rule: str, alert_id: str | None = None, after: float = 0.0):
        return next(((at, a) for at, a in self.alerts if at >= after and a.state == state and a.rule == rule
                     and (alert_id is None or a.alert_id == alert_id) and (alert_id or a.component == "rabbitmq")),
                    None)


async def test_rabbitmq_outage_turns_ready_503_and_raises_then_resolves_an_alert(worker_factory, worker_env, vhost):  # noqa: F811
    worker = await asyncio.to_thread(
        worker_factory(COSMIC_RABBITMQ_URL=vhost.url, COSMIC_HEALTH_INTERVAL_SECONDS="1").start)
    settings = Settings.from_env(environ={**worker_env, "COSMIC_RABBITMQ_URL": vhost.url})

    async def get(path: str):
        return await asyncio.to_thread(worker.get_json, path)

    async def ready_ok():
        status, body = await get("/ready")
        return (status, body) if status == 200 else None

    # Ready once the first probes ran: each check says ok with a detail; no auth needed.
    _, ready = await wait_until_async(ready_ok, timeout=120, interval=0.25, what="/ready 200", diagnostics=worker.log_tail)
    assert set(ready["checks"]) == {"tables", "kafka", "schema_registry", "kafka_producer", "rabbitmq"}
    assert all(c["ok"] and c["detail"] and c["error"] is None for c in ready["checks"].values()), ready
    status, live = await get("/health")
    assert status == 200 and live["status"] == "alive" and live["component"] == ready["component"]
    component = ready["component"]
    rabbit_alert = f"component_down:rabbitmq@{component}"

    async with AlertTail(settings) as tail:
        await wait_until_async(lambda: tail.reports > 0, timeout=60, interval=0.25, what="a health report on system-health",
                               diagnostics=worker.log_tail)
        issued = time.monotonic()
        stop = asyncio.create_task(asyncio.to_thread(vhost.node.stop))
        down_at = None
        not_ready = fired = None
        try:
            try:
                # Poll from the moment the stop is issued (the node closes connections early in
                # its shutdown); the outage counts from when the node is down.
                # 120 s for the stop, then MAX_OUTAGE_S from the node being down (at most both).
                deadline = time.monotonic() + 120

                async def observed() -> bool:
                    nonlocal deadline, down_at, not_ready, fired
                    if time.monotonic() >= deadline:
                        return True  # not seen in time: the assertions below say which
                    if down_at is None and stop.done():
                        await stop
                        down_at = time.monotonic()
                        deadline = down_at + MAX_OUTAGE_S
                    if not_ready is None:
                        status, body = await get("/ready")
                        if status == 503:
                            not_ready = (time.monotonic(), body)
                    if fired is None:
                        fired = tail.find(state="FIRING", rule="component_down", alert_id=rabbit_alert, after=issued)
                    return bool(not_ready and fired)

                await wait_until_async(observed, timeout=120 + MAX_OUTAGE_S, interval=0.2, fail=False,
                                       what="/ready 503 and a FIRING alert")
                status_during, live_during = await get("/health")
            finally:
                try:
                    if down_at is None:
                        await stop
                finally:
                    down_at = down_at or time.monotonic()
                    await asyncio.to_thread(vhost.node.start)  # always, even when the stop failed
            up_at = time.monotonic()
        finally:
            outage = time.monotonic() - issued  # stop command → node started again
        assert not_ready is not None, f"/ready never answered 503 while RabbitMQ was down\n{worker.log_tail()}"
        assert fired is not None, f"no FIRING alert for RabbitMQ\n{tail.alerts}\n{worker.log_tail()}"
        ready_s, alert_s = not_ready[0] - down_at, fired[0] - down_at  # negative: seen during the stop
        body = not_ready[1]
        assert body["status"] == "not ready" and body["failing"] == ["rabbitmq"], body
        assert body["checks"]["rabbitmq"]["ok"] is False and body["checks"]["rabbitmq"]["error"], body
        assert "guest:guest@" not in json.dumps(body)
        assert status_during == 200 and live_during["status"] == "alive", live_during  # liveness ignores deps
        alert = fired[1]
        assert (alert.component, alert.severity, alert.state) == ("rabbitmq", "CRITICAL", "FIRING")

        # RabbitMQ back: /ready 200 again and the same alert_id RESOLVED.
        _, ready_again = await wait_until_async(ready_ok, timeout=120, interval=0.25, what="/ready 200 after the restart",
                                                 diagnostics=worker.log_tail)
        ready_back_s = time.monotonic() - up_at

        async def resolved():
            return tail.find(state="RESOLVED", rule="component_down", alert_id=rabbit_alert, after=issued)

        resolved_at, resolved_alert = await wait_until_async(resolved, timeout=60, interval=0.25, what="the RESOLVED alert",
                                                                diagnostics=worker.log_tail)
        print(f"\nRabbitMQ stop took {down_at - issued:.1f} s; from the stop command: /ready 503 after "
              f"{not_ready[0] - issued:.1f} s, FIRING alert after {fired[0] - issued:.1f} s; relative to the node "
              f"being down: {ready_s:+.1f} s / {alert_s:+.1f} s; stop to restarted {outage:.1f} s; "
              f"after the restart: /ready 200 in {ready_back_s:.1f} s, RESOLVED in {resolved_at - up_at:.1f} s")
        assert ready_s <= DETECT_S and alert_s <= DETECT_S, (ready_s, alert_s)
        assert resolved_alert.correlation_id == alert.correlation_id
        assert resolved_alert.event_id != alert.event_id
        assert ready_again["checks"]["rabbitmq"]["ok"] is True
