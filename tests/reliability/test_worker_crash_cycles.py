"""Worker crash: SIGKILL the worker and restart it 10 times while events arrive in bursts at
1,000 events/s; then compare the input event ids with every sink: 0 lost, 0 duplicated.

Sinks: job states (the `job_state` table), audit records and notifications (Kafka topics,
counted by event_id), the audit hash chain (the audit agent's effect), the RabbitMQ
bridge's `job-events-audit` queue (message_id = event_id; consumers dedupe by message_id, so
copies there are counted, not failed), and every user's webhook (through the RabbitMQ
delivery queue; receivers dedupe by Idempotency-Key, so copies are counted, not failed): the
kills hit the worker mid-delivery too.

This test found two data-loss defects (2026-11-23): Faust's table recovery wrote changelog
values older than a key's local value over it, so a replayed event was refused as a
duplicate and its transition lost (2 jobs of 600) — fixed by fencing recovery
(:mod:`app.worker.table_fencing`); and a restarted worker began at committed offsets past records
no agent had handled (102 jobs of 600 lost their submission) — fixed by per-agent cursors
that read skipped records back from Kafka (``tables/agent_cursors.py``).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from app.core.settings import Settings
from app.ops.workload import build_workload
from app.worker.publisher import EventPublisher
from fault_support import (
    QueueDrain,
    WebhookSink,
    account_job_states,
    account_kafka_effects,
    expected_notification_ids,
    publish_paced,
)
from support.audit import poll_audit_chain
from support.rabbit import vhost  # noqa: F401 - fixture
from support.workers import wait_for_final_states

JOBS = 600
CYCLES = 10
RATE = 1_000.0
SESSION_TIMEOUT_S = 6  # Kafka's shortest (group.min.session.timeout.ms), as in test_scale_out


@pytest.mark.timeout(1200)
async def test_ten_sigkill_cycles_lose_and_duplicate_nothing(worker_factory, worker_env, vhost, uid, report):  # noqa: ANN001, F811
    # A SIGKILLed worker stays a group member until its session times out; the restarted
    # one joins after that, so a short session keeps each cycle short.
    overrides = {"COSMIC_RABBITMQ_URL": vhost.url, "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_S),
                 "COSMIC_WEBHOOK_ALLOWED_NETWORKS": WebhookSink.ALLOWED}
    env = {**worker_env, **overrides}
    settings = Settings.from_env(environ=env)
    workload = build_workload(jobs=JOBS, seed=9, prefix=f"job-{uid}")
    deliveries = workload.deliveries
    row = report(scenario=f"worker SIGKILL x{CYCLES} at {RATE:,.0f} ev/s bursts", events_in=len(deliveries))
    rng = random.Random(9)
    drain = QueueDrain(url=vhost.url, queue="job-events-audit")
    chunk = -(-len(deliveries) // CYCLES)
    killed_with_backlog = 0
    acked: list[str] = []
    hooks = await WebhookSink().start()
    try:
        async with EventPublisher(settings=settings) as publisher:
            for cycle in range(CYCLES):
                worker = await asyncio.to_thread(worker_factory(**overrides).start)
                if cycle == 0:
                    await asyncio.to_thread(vhost.wait_for_queues, {"job-events-audit"})
                    drain.start()
                    users = sorted({e.user_id for e in deliveries if e.user_id})
                    await hooks.subscribe(base_url=worker.base_url, settings=settings, users=users)
                part = deliveries[cycle * chunk:(cycle + 1) * chunk]
                await publish_paced(publisher=publisher, events=part, rate=RATE, acked=acked)
                # Kill it while it works through the burst (it handles far fewer than 1,000/s).
                await asyncio.sleep(rng.uniform(0.3, 2.5))
                states = await asyncio.to_thread(worker.table, "job_state")
                finished = sum(1 for job, s in workload.final_status.items() if states.get(job, {}).get("status") == s)
                killed_with_backlog += finished < len(workload.final_status)
                await asyncio.to_thread(worker.kill)
        assert len(acked) == len(deliveries)
        assert killed_with_backlog >= CYCLES // 2, "most kills must hit a worker with work in flight"

        last = await asyncio.to_thread(worker_factory(**overrides).start)
        states = await asyncio.to_thread(wait_for_final_states, worker=last, workload=workload, timeout=600)
        await drain.wait_for(ids=workload.event_ids, timeout=180)
        await hooks.wait_for(ids=expected_notification_ids(workload=workload), timeout=180)
    finally:
        await drain.stop()
        await hooks.stop()

    account_job_states(row=row, workload=workload, states=states)
    await account_kafka_effects(row=row, settings=settings, workload=workload)
    chain, _ = await asyncio.to_thread(poll_audit_chain, env, workload.transitions, timeout=180.0)
    row.notes["audit hash chain"] = f"{chain.get('total')} entries for {workload.transitions} transitions, ok={chain.get('ok')}"
    rabbit = row.sink(name="rabbitmq job-events-audit", expected=workload.event_ids, seen=list(drain.seen.elements()))
    row.notes["rabbitmq copies beyond one per event_id (deduped by message_id)"] = rabbit["duplicated"]
    # Lifecycle notifications only, as for the notifications topic above (runtime-anomaly
    # notifications of the same users are not this workload's to count).
    want_notes = expected_notification_ids(workload=workload)
    lifecycle_posts, anomaly_keys = hooks.split(expected=want_notes)
    webhooks = row.sink(name="rabbitmq webhook deliveries", expected=want_notes, seen=lifecycle_posts)
    row.notes["other webhook notifications (runtime anomalies)"] = len(anomaly_keys)
    row.notes["webhook POSTs beyond one per notification (deduped by Idempotency-Key)"] = webhooks["duplicated"]
    row.notes["input"] = (f"{len(deliveries)} events ({workload.duplicates} sent twice by the producer), "
                          f"{CYCLES} bursts of {chunk} at {RATE:,.0f} ev/s; {killed_with_backlog} kills with work in flight")

    for name, counts in row.sinks.items():
        assert counts["lost"] == 0, f"{name}: {counts}\n{last.log_tail()}"
        assert counts["unexpected"] == 0, f"{name}: {counts}"
        if not name.startswith("rabbitmq"):
            assert counts["duplicated"] == 0, f"{name}: {counts}"
    assert chain.get("ok") and chain.get("total") == workload.transitions, chain
