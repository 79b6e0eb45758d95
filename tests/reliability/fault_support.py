"""Helpers of the fault-injection scenarios: paced publishing, reading what each sink got,
and accounting it (in, out, lost, duplicated) into the suite's report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Sequence

import aio_pika
from yarl import URL

from app.core.codecs import Codecs
from app.core.ids import derived_id
from app.core.models import EventBase
from app.core.settings import Settings
from app.ops.topic_reader import read_topic
from app.ops.workload import Workload
from app.worker.publisher import EventPublisher, PublishError
from support.polling import wait_until_async

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


async def publish_paced(
    *, publisher: EventPublisher, events: Sequence[EventBase], rate: float, batch: int = 50,
    acked: list[str] | None = None, retry_until: float | None = None,
) -> list[str]:
    """Publish ``events`` at about ``rate`` events/s in batches; the ids Kafka acknowledged.

    With ``retry_until`` (a monotonic deadline) a batch Kafka did not acknowledge is sent
    again, as a client would (the idempotent producer and event_id dedupe make that safe);
    without it the PublishError propagates. ``acked`` collects ids as they are acknowledged."""
    acked = [] if acked is None else acked
    started = time.monotonic()
    for i in range(0, len(events), batch):
        chunk = list(events[i:i + batch])
        while True:
            try:
                acked += await publisher.publish_many(chunk)
                break
            except PublishError as exc:
                acked += exc.published
                if retry_until is None or time.monotonic() > retry_until:
                    raise
                chunk = chunk[len(exc.published):]
                await asyncio.sleep(0.5)
        due = started + (i + len(chunk)) / rate
        pause = due - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
    return acked


async def decoded(*, settings: Settings, topic: str) -> list:
    codec = Codecs(settings=settings).for_topic(topic)
    records = await read_topic(bootstrap=settings.kafka_bootstrap, topic=settings.topic_prefix + topic)
    return [codec.decode(r.value) for r in records]


def account_job_states(*, row, workload: Workload, states: dict) -> None:  # noqa: ANN001
    """Job states: one per job; a job whose status, retries or history differ counts as lost."""
    good = [job for job, status in workload.final_status.items()
            if states.get(job, {}).get("status") == status
            and states[job].get("retry_count") == workload.retry_count[job]
            and states[job].get("parked") == []]
    row.sink(name="job_state (final status)", expected=set(workload.final_status), seen=good)


def expected_notification_ids(*, workload: Workload) -> set[str]:
    """A notification per completion, failure and retry (a QUEUED after the first one)."""
    ids: set[str] = set()
    for events in workload.lifecycles.values():
        queued = 0
        for event in events:
            after = event.status_after()
            if after == "QUEUED":
                queued += 1
            if after in ("COMPLETED", "FAILED") or (after == "QUEUED" and queued > 1):
                ids.add(derived_id(event.event_id, "notification"))
    assert len(ids) == workload.notifications, "the notification rule above drifted from the workload's"
    return ids


async def account_kafka_effects(*, row, settings: Settings, workload: Workload) -> None:  # noqa: ANN001
    """Audit records and notifications, counted by event_id: a re-emitted copy (same id) is
    reported as a redelivered message, not as a duplicated effect, since every consumer
    applies an event_id once; the audit hash chain is checked separately."""
    audits = await decoded(settings=settings, topic="audit-trail")
    notes = await decoded(settings=settings, topic="notifications")
    want_notes = expected_notification_ids(workload=workload)
    audit_ids = Counter(a.event_id for a in audits)
    note_ids = Counter(n.event_id for n in notes if n.event_id in want_notes)
    row.sink(name="audit-trail ids", expected={derived_id(e, "audit") for e in workload.event_ids},
             seen=list(audit_ids))
    row.sink(name="notifications ids", expected=want_notes, seen=list(note_ids))
    row.notes["audit-trail messages (incl. re-emitted copies)"] = len(audits)
    row.notes["notifications messages (incl. re-emitted copies)"] = sum(note_ids.values())


class QueueDrain:
    """Consume a RabbitMQ queue into ``seen`` (message_id → deliveries), reconnecting through
    outages, until stopped."""

    def __init__(self, *, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.seen: Counter = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "QueueDrain":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)

    async def wait_for(self, *, ids: set[str], timeout: float) -> None:
        """Wait until every one of ``ids`` was consumed, at most ``timeout`` s (the caller accounts)."""
        await wait_until_async(lambda: ids <= set(self.seen), timeout=timeout, what=f"{len(ids)} messages",
                               fail=False)

    async def _run(self) -> None:
        while not self._stop.is_set():
            # aio_pika.connect drops the connection it made when connecting fails; garbage-collected
            # later with no loop running, it warns "Connection.close was never awaited"
            connection = aio_pika.Connection(URL(self.url))
            try:
                await connection.connect(timeout=5)
            except Exception:  # noqa: BLE001 - RabbitMQ is down: try again
                with contextlib.suppress(Exception):
                    await connection.close()
                await asyncio.sleep(0.5)
                continue
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=1000)
                queue = await channel.get_queue(self.queue)

                async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    self.seen[message.message_id] += 1
                    await message.ack()

                await queue.consume(on_message)
                # a probe on a second channel notices a lost connection (is_closed may not)
                probe = await connection.channel()
                while not self._stop.is_set():
                    await asyncio.sleep(0.5)
                    await asyncio.wait_for(probe.declare_queue(self.queue, passive=True), timeout=3)
            except Exception:  # noqa: BLE001 - connection lost mid-way
                await asyncio.sleep(0.5)
            finally:
                try:
                    await connection.close()
                except Exception:  # noqa: BLE001
                    pass


class WebhookSink:
    """A webhook receiver on 127.0.0.1 (give the worker ``COSMIC_WEBHOOK_ALLOWED_NETWORKS``
    127.0.0.1/32): ``seen`` counts POSTs per ``Idempotency-Key``, as a receiver dedupes."""

    ALLOWED = "127.0.0.1/32"

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        #: Idempotency-Key -> the notification's title.
        self.titles: dict[str, str] = {}
        self.url = ""
        self._runner = None

    async def start(self) -> "WebhookSink":
        from aiohttp import web

        async def receive(request: web.Request) -> web.Response:
            body = await request.json()
            self.seen[request.headers["Idempotency-Key"]] += 1
            self.titles[request.headers["Idempotency-Key"]] = str(body.get("title", ""))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def subscribe(self, *, base_url: str, settings: Settings, users: Sequence[str], timeout: float = 60) -> None:
        """PUT WEBSOCKET + WEBHOOK (this sink) for ``users`` and wait until the worker applied it."""
        import aiohttp

        from app.core.auth import mint_token

        def bearer(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {mint_token(settings=settings, sub=user)}"}

        async with aiohttp.ClientSession(base_url=base_url) as http:
            for user in users:
                async with http.put(f"/api/users/{user}/notification-preferences", headers=bearer(user),
                                    json={"channels": ["WEBSOCKET", "WEBHOOK"], "webhook_url": self.url}) as response:
                    assert response.status == 202, await response.text()
            pending = list(users)

            async def applied() -> bool:
                while pending:
                    async with http.get(f"/api/users/{pending[0]}/notification-preferences",
                                        headers=bearer(pending[0])) as response:
                        body = await response.json() if response.status == 200 else {}
                    if body.get("webhook_url") != self.url:
                        return False
                    pending.pop(0)
                return True

            await wait_until_async(applied, timeout=timeout, interval=0.3, what="the webhook preferences applied",
                                   describe=lambda _last: f"preferences of {pending[0]} not applied")

    def split(self, *, expected: set[str]) -> tuple[list[str], set[str]]:
        """The POSTs of ``expected`` notifications (one key per POST), and the keys of the
        others, each of which must be a runtime-anomaly notification (the detector notifies the
        same users about the workload's runtimes; those are not the workload's to count)."""
        others = set(self.seen) - expected
        strangers = {key: self.titles.get(key) for key in others
                     if not self.titles.get(key, "").endswith(("much longer than usual", "unusual runtime"))}
        assert not strangers, f"webhook notifications that are neither expected nor runtime anomalies: {strangers}"
        return [key for key in self.seen.elements() if key in expected], others

    async def wait_for(self, *, ids: set[str], timeout: float) -> None:
        """Wait until every one of ``ids`` was POSTed, at most ``timeout`` s (the caller accounts)."""
        await wait_until_async(lambda: ids <= set(self.seen), timeout=timeout, what=f"{len(ids)} webhook POSTs",
                               fail=False)
