"""Scale: one worker versus two in the same consumer group — steady-state events/s of the
``track_job_lifecycle`` agent, with the RabbitMQ bridge off so the figure is about Kafka-side
scaling (the topic's partitions shared out across the group).

Two scenarios, one after the other, each on topics of its own (prefix ``<run prefix>scale-1w-``
/ ``scale-2w-``) and with an app id (consumer group) of its own, over the same workload:

1. one real ``python -m app.ops.cli worker`` (:class:`bench.worker.BenchWorker`, RocksDB);
2. two such workers with the **same** app id — one group — each with its own data dir and web
   port, started together (a thread each).

In what order, and why:

* **Workers first, on empty topics.** With the backlog published before they start, the first
  worker to become ready would take every partition and drain much of the backlog alone until
  the second joined (a worker needs 15–40 s to start here; the quick backlog drains in a few
  seconds), and the rebalance would fall inside the measurement.
* **Wait until the group has settled**, as both the broker and the workers see it: the group
  coordinator describes the group (``DescribeGroups``, the assignment Faust's assignor sent)
  as ``Stable`` with as many members as workers, each holding at least one ``job-lifecycle``
  partition and each of its 10 partitions held by exactly one member; and every worker answers
  ``GET /api/jobs/-`` with 404 (503 while its tables recover or the group rebalances). The
  same assignment must be seen twice, 1 s apart. The workers' own report of their partitions
  (the ``cosmic_consumer_lag`` gauges of ``/metrics``) is not used: it is refreshed only every
  health interval (5 s) and keeps the old partitions when a probe fails. The group is
  described again after the drain; a changed assignment is reported next to the figure.
* **Publish the backlog**: ``ctx.events / 5`` whole job lifecycles (``app.ops.workload``: 10 % sent
  twice, some pairs swapped; ``--quick``: 500 events). The records are encoded beforehand with
  ``app.worker.publisher.prepare_record`` (what ``EventPublisher`` sends) and sent with an acks=all
  idempotent producer like ``EventPublisher``'s, so publishing takes a small fraction of the
  drain; the workers already consume meanwhile.
* **The measured window** starts at the first poll after the last ack — no publisher competing
  for the CPU any more — and ends at the poll that sees every event handled: the events handled
  in the window (the sum over the workers of ``/metrics``
  ``cosmic_processing_seconds_count{agent="track_job_lifecycle"}``, polled every 0.2 s) over its
  length. With two workers the window's end includes the tail where one worker has finished its
  partitions and the other has not (the shares show how uneven the keys fell).

Over the same window: each worker's share of the events; each worker process's CPU
(``utime + stime`` of ``/proc/<pid>/stat``, in cores) and the time its threads were runnable
but waited for a core (``/proc/<pid>/task/*/schedstat``); this process's CPU (the polling);
the local stack's Kafka broker process's CPU (when the stack runs on this machine); and the
machine's busy and stolen CPU (``/proc/stat``; what none of these accounts for is other work on
the machine). Also each worker's CPU while idle and settled (over the 1 s settle confirmation).
The broker shares the machine's cores, so two workers may not double the rate: the report says
how many cores were busy and who used them. With the default one standby replica, each of two
workers also replays the other's table changelogs, work a single worker never does.

The workers run with a 10 s Kafka session (a heartbeat every second instead of every 6 s): a
worker that joins just after the group first formed is admitted within a second. That shortens
start-up only. A scenario's workers are stopped (SIGTERM) while the next scenario's workers start.
``--quick`` (a smoke run of the harness) starts all three workers at once instead, so the
two-worker group idles beside the one-worker measurement (a few hundredths of a core each), and
measures the second scenario once the first one's worker has stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from app.core.codecs import Codecs
from app.core.settings import Settings
from app.core.topic_specs import JOB_LIFECYCLE, spec_by_name
from app.ops.topic_admin import ensure_topics
from app.ops.workload import build_workload
from app.worker.publisher import OutgoingRecord, prepare_record
from bench import environment
from bench.context import (BenchContext, BenchError, figure, fmt, handled_by_agent, job_spacing, ratio,
                           workload_phrase, workload_start)
from bench.ingest import broker_pids as local_broker_pids
from bench.worker import BenchWorker

TITLE = "Scale: one worker versus two"
#: A job's lifecycle is about 5.2 events: jobs = the run's event count / 5.
EVENTS_PER_JOB = 5
#: Events of a --quick run (a CI smoke run only checks the harness; the drains dominate its time).
QUICK_EVENTS = 500
TOPIC = JOB_LIFECYCLE
AGENT = "track_job_lifecycle"
POLL_S = 0.2
#: The group must look the same on two polls this far apart to count as settled.
SETTLE_CONFIRM_S = 1.0
SETTLE_TIMEOUT_S = 180.0
START_TIMEOUT_S = 240.0
#: Give up on a drain that has not handled every event after this long.
DRAIN_TIMEOUT_S = 600.0
#: Every worker's environment on top of the run's settings: the bridge off (Kafka-side scaling
#: only); a 10 s session, so a heartbeat every 1 s instead of 6 s — a worker that joins just after
#: the group first formed is let in within a second (start-up only, no effect on processing).
WORKER_ENV = {"COSMIC_RABBITMQ_BRIDGE_ENABLED": "false", "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": "10"}
#: Busy share of all cores from which the machine counts as saturated.
SATURATED = 0.9
#: A two/one ratio from which the report calls the scaling about linear.
NEAR_LINEAR = 1.8
#: Cores of other work that differ between the scenarios' windows enough to be pointed out.
LOAD_SHIFT = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Assignment = dict[str, tuple[int, ...]]  # group member id -> its job-lifecycle partitions


def _handled(base_url: str) -> float:
    """Events the worker's lifecycle agent has handled so far (its /metrics)."""
    return handled_by_agent(base_url).get(AGENT, 0.0)


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14, 15


def _runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of process ``pid`` have spent runnable but waiting for a core
    (``/proc/<pid>/task/*/schedstat``, second field, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def _broker_cpu_s(pids: Sequence[int]) -> float | None:
    try:
        return sum(_process_cpu_s(pid) for pid in pids) if pids else None
    except OSError:
        return None


async def _describe_group(*, bootstrap: str, group: str, topic: str) -> tuple[str, Assignment]:
    """(state, member → partitions of ``topic``) of consumer group ``group``, as its coordinator
    describes it. Faust's assignor sends the standard consumer-protocol assignment."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # groups: (error_code, group, state, protocol_type, protocol, members, ...);
    # members: (member_id, [group_instance_id,] client_id, client_host, metadata, assignment)
    description = responses[0].groups[0]
    state, members = description[2], description[5]
    assignment: Assignment = {}
    for member in members:
        decoded = ConsumerProtocolMemberAssignment.decode(member[-1]) if member[-1] else None
        parts = [p for t, ps in (decoded.assignment if decoded else []) if t == topic for p in ps]
        assignment[member[0]] = tuple(sorted(parts))
    return state, assignment


def _settled(*, state: str, assignment: Assignment, members: int, partitions: int) -> str | None:
    """Why the group is not settled yet (None when it is)."""
    if state != "Stable":
        return f"group state {state}"
    if len(assignment) != members:
        return f"{len(assignment)} of {members} members in the group"
    held = Counter(p for parts in assignment.values() for p in parts)
    if sorted(held) != list(range(partitions)) or any(n != 1 for n in held.values()):
        return f"{TOPIC} partitions held {dict(sorted(held.items()))}"
    if any(not parts for parts in assignment.values()):
        return "a member holds no partition"
    return None


async def _wait_settled(*, settings: Settings, workers: Sequence[BenchWorker],
                        partitions: int) -> tuple[Assignment, "_Sample", "_Sample"]:
    """Wait until the group is Stable, every partition held by exactly one of ``workers`` and
    every worker serving from its tables, on two polls SETTLE_CONFIRM_S apart; returns the
    assignment and samples at those two polls (the workers idle in between)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    previous: tuple[Assignment, _Sample] | None = None
    reason = "not described yet"
    while time.monotonic() < deadline:
        state, assignment = await _describe_group(bootstrap=settings.kafka_bootstrap, group=settings.app_id,
                                                  topic=settings.topic_prefix + TOPIC)
        reason = _settled(state=state, assignment=assignment, members=len(workers), partitions=partitions)
        if reason is None:
            statuses = await asyncio.gather(*(asyncio.to_thread(w.process.status_of, "/api/jobs/-")
                                              for w in workers))
            if any(status not in (401, 404) for status in statuses):
                reason = f"workers answer {statuses} (503: recovering or rebalancing)"
        if reason is None:
            sample = await _sample(workers)
            if previous is not None and previous[0] == assignment:
                return assignment, previous[1], sample
            previous = (assignment, sample)
        else:
            previous = None
        await asyncio.sleep(SETTLE_CONFIRM_S if reason is None else POLL_S)
    raise BenchError(f"scale: group {settings.app_id} not settled in {SETTLE_TIMEOUT_S:.0f} s ({reason})\n"
                     + "\n".join(w.log_tail() for w in workers))


async def _publish(*, settings: Settings, records: Sequence[OutgoingRecord]) -> float:
    """Send pre-encoded ``records`` like EventPublisher does (acks=all, idempotent); the seconds
    until every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        begin = time.perf_counter()
        futures = [await producer.send(r.topic, r.value, key=r.key, timestamp_ms=r.timestamp_ms,
                                       headers=list(r.headers)) for r in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - begin
    finally:
        await producer.stop()


@dataclasses.dataclass(kw_only=True)
class _Sample:
    """Counters of one instant: per-worker handled events and CPU, machine and own CPU."""

    at: float
    handled: list[float]
    worker_cpu: list[float]
    worker_wait: list[float]
    broker_cpu: float | None
    machine: list[int] | None
    own_cpu: float


async def _sample(workers: Sequence[BenchWorker], *, broker_pids: Sequence[int] = ()) -> _Sample:
    """Poll every worker's /metrics, then read the CPU counters."""
    try:
        handled = await asyncio.gather(*(asyncio.to_thread(_handled, w.base_url) for w in workers))
        return _Sample(at=time.perf_counter(), handled=list(handled),
                       worker_cpu=[_process_cpu_s(w.process.proc.pid) for w in workers],
                       worker_wait=[_runqueue_wait_s(w.process.proc.pid) for w in workers],
                       broker_cpu=_broker_cpu_s(broker_pids),
                       machine=environment.cpu_times(), own_cpu=time.process_time())
    except OSError as exc:  # a worker gone or not answering
        raise BenchError(f"scale: a worker did not answer ({exc!r})\n"
                         + "\n".join(w.log_tail() for w in workers)) from exc


def _encode(*, events: Sequence[Any], settings: Settings) -> list[OutgoingRecord]:
    """The Kafka records ``EventPublisher`` would send for ``events`` (schemas registered under
    ``settings``' prefixed subjects)."""
    codecs = Codecs(settings=settings)
    return [prepare_record(event=event, codecs=codecs, topic_prefix=settings.topic_prefix) for event in events]


def _new_group(ctx: BenchContext, *, name: str, settings: Settings, workers: int) -> list[BenchWorker]:
    """``workers`` workers with the same settings (one group), each with its own dir and port."""
    group = []
    for index in range(workers):
        workdir = ctx.workdir / f"scale-{name}-{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        worker = BenchWorker(settings=settings, workdir=workdir)
        worker.env.update(WORKER_ENV)
        group.append(worker)
    return group


async def _start_group(group: Sequence[BenchWorker]) -> list[float]:
    """Start every worker at once (threads); the seconds each took to become ready."""
    started = await asyncio.gather(*(asyncio.to_thread(w.start, timeout=START_TIMEOUT_S) for w in group),
                                   return_exceptions=True)  # every start has ended before any stop
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome
    return [float(seconds) for seconds in started]


async def _stop_group(ctx: BenchContext, *, name: str, group: Sequence[BenchWorker]) -> None:
    begin = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(w.stop, timeout=15) for w in group))
    ctx.log(f"scale: {name}: workers stopped in {time.monotonic() - begin:.1f} s")


async def _measure(ctx: BenchContext, *, name: str, group: Sequence[BenchWorker], settings: Settings,
                   records: Sequence[OutgoingRecord], broker_pids: Sequence[int]) -> dict[str, Any]:
    """Wait until ``group`` has settled, publish ``records``, measure the drain."""
    total = len(records)
    all_ready = time.monotonic()
    assignment, idle_start, before = await _wait_settled(settings=settings, workers=group,
                                                         partitions=spec_by_name(TOPIC).partitions)
    settle_s = time.monotonic() - all_ready
    ctx.log(f"scale: {name}: group settled {settle_s:.1f} s after the workers were ready "
            f"({sorted(len(p) for p in assignment.values())} partitions per member)")
    if sum(before.handled) != 0:
        raise BenchError(f"scale: {name}: {sum(before.handled):.0f} events handled before publishing")
    publish_s = await _publish(settings=settings, records=records)
    window_start = last = await _sample(group, broker_pids=broker_pids)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while sum(last.handled) < total:
        if time.monotonic() > deadline:
            raise BenchError(f"scale: {name}: {sum(last.handled):,.0f} of {total:,} events handled "
                             f"{DRAIN_TIMEOUT_S:.0f} s after publishing\n" + "\n".join(w.log_tail() for w in group))
        for worker in group:
            if worker.process.proc.poll() is not None:
                raise BenchError(f"scale: {name}: a worker exited with {worker.process.proc.returncode}\n"
                                 f"{worker.log_tail()}")
        await asyncio.sleep(POLL_S)
        last = await _sample(group, broker_pids=broker_pids)
    end = last  # the poll that saw every event handled ends the window
    state, after = await _describe_group(bootstrap=settings.kafka_bootstrap, group=settings.app_id,
                                         topic=settings.topic_prefix + TOPIC)

    counted = [b - a for a, b in zip(window_start.handled, end.handled)]
    if sum(counted) <= 0:
        raise BenchError(f"scale: {name}: the backlog was drained while it was being published "
                         f"({publish_s:.1f} s); use more events")
    seconds = max(end.at - window_start.at, POLL_S)
    rate = sum(counted) / seconds
    cpu_s = [b - a for a, b in zip(window_start.worker_cpu, end.worker_cpu)]
    machine = environment.cpu_share(window_start.machine, end.machine)
    cores = os.cpu_count() or 1
    result = {
        "workers": len(group),
        "rate": rate,
        "counted_events": sum(counted),
        "backlog_at_start_pct": round(100 * sum(counted) / total, 1),
        "window_s": round(seconds, 2),
        "publish_s": round(publish_s, 2),
        "settle_s": round(settle_s, 1),
        "partitions_per_worker": sorted(len(p) for p in assignment.values()),
        "rebalanced_during_measurement": state != "Stable" or after != assignment,
        "share_pct": [round(100 * c / sum(counted), 1) for c in counted],
        "worker_cores": [round(c / seconds, 2) for c in cpu_s],
        "worker_waiting_cores": [round(max(b - a, 0.0) / seconds, 2)
                                 for a, b in zip(window_start.worker_wait, end.worker_wait)],
        "worker_cpu_us_per_event": round(1e6 * sum(cpu_s) / sum(counted), 1),
        "idle_worker_cores": [round((b - a) / (before.at - idle_start.at), 3)
                              for a, b in zip(idle_start.worker_cpu, before.worker_cpu)],
        "bench_process_cores": round((end.own_cpu - window_start.own_cpu) / seconds, 2),
        "broker_cores": (round((end.broker_cpu - window_start.broker_cpu) / seconds, 2)
                         if end.broker_cpu is not None and window_start.broker_cpu is not None else None),
        "machine": machine,
        "machine_cores": cores,
        "machine_busy_cores": round(machine.get("busy_pct", 0.0) / 100 * cores, 2),
    }
    accounted = sum(result["worker_cores"]) + result["bench_process_cores"] + (result["broker_cores"] or 0.0)
    result["other_cores"] = round(max(result["machine_busy_cores"] - accounted, 0.0), 2)
    ctx.log(f"scale: {name}: {rate:,.0f} events/s ({sum(counted):,.0f} events in {seconds:.2f} s after a "
            f"{publish_s:.2f} s publish; shares {result['share_pct']} %, worker cores {result['worker_cores']} "
            f"(idle {result['idle_worker_cores']}), broker {result['broker_cores']} cores, machine "
            f"{result['machine_busy_cores']} of {cores} cores busy)")
    return result


@dataclasses.dataclass(kw_only=True)
class _Scenario:
    name: str
    settings: Settings
    records: list[OutgoingRecord]
    group: list[BenchWorker]
    ready_s: list[float] = dataclasses.field(default_factory=list)


async def _prepare(ctx: BenchContext, *, workers: int, events: Sequence[Any]) -> _Scenario:
    """A scenario's own topics (prefix and app id), its encoded records, its workers (not started)."""
    name = f"{workers}w"
    settings = dataclasses.replace(ctx.settings, topic_prefix=f"{ctx.topic_prefix}scale-{name}-",
                                   app_id=f"{ctx.settings.app_id}-scale-{name}")
    await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                        prefix=settings.topic_prefix)
    records = await asyncio.to_thread(_encode, events=events, settings=settings)
    return _Scenario(name=name, settings=settings, records=records,
                     group=_new_group(ctx, name=name, settings=settings, workers=workers))


async def _start(ctx: BenchContext, scenarios: Sequence[_Scenario]) -> None:
    """Start the workers of ``scenarios``, all at once."""
    ready = await _start_group([w for scenario in scenarios for w in scenario.group])
    for scenario in scenarios:
        scenario.ready_s, ready = [round(s, 1) for s in ready[:len(scenario.group)]], ready[len(scenario.group):]
        ctx.log(f"scale: {scenario.name}: workers ready in {', '.join(f'{s:.1f}' for s in scenario.ready_s)} s")


async def run(*, ctx: BenchContext) -> dict[str, Any]:
    jobs = max((min(ctx.events, QUICK_EVENTS) if ctx.quick else ctx.events) // EVENTS_PER_JOB, 20)
    workload = build_workload(jobs=jobs, seed=13, prefix=f"bench-{ctx.run_id}-scale", start=workload_start(jobs=jobs),
                              job_spacing_s=job_spacing(jobs=jobs))
    broker_pids = await asyncio.to_thread(local_broker_pids, ctx)
    scenarios: list[_Scenario] = []
    results: dict[str, dict[str, Any]] = {}
    stopping: list[asyncio.Future[None]] = []
    try:
        for workers in (1, 2):
            scenarios.append(await _prepare(ctx, workers=workers, events=workload.deliveries))
        if ctx.quick:  # every worker at once: start-up is most of a quick run
            await _start(ctx, scenarios)
        for scenario in scenarios:
            if not ctx.quick:
                await _start(ctx, [scenario])
            results[scenario.name] = await _measure(ctx, name=scenario.name, group=scenario.group,
                                                    settings=scenario.settings, records=scenario.records,
                                                    broker_pids=broker_pids)
            results[scenario.name]["worker_ready_s"] = scenario.ready_s
            stop = asyncio.ensure_future(_stop_group(ctx, name=scenario.name, group=scenario.group))
            stopping.append(stop)
            if ctx.quick:  # the next scenario's workers are up: measure it once these are gone
                await stop
            # else: the next scenario's (unmeasured) start-up overlaps this shutdown
    finally:
        await asyncio.gather(*stopping, return_exceptions=True)
        # whatever did not get that far (stopping a stopped worker does nothing)
        await asyncio.gather(*(asyncio.to_thread(w.stop, timeout=15) for s in scenarios for w in s.group))
    figures = {
        "one_worker_eps": figure(label="one worker", unit="events/s", runs=[results["1w"]["rate"]], digits=0),
        "two_workers_eps": figure(label="two workers, one group", unit="events/s", runs=[results["2w"]["rate"]],
                                  digits=0),
    }
    return {
        "params": {"jobs": jobs, "events": len(workload.deliveries), "duplicates": workload.duplicates,
                   "topics": {s.name: s.settings.topic_prefix + TOPIC for s in scenarios},
                   "partitions": spec_by_name(TOPIC).partitions, "agent": AGENT, "quick": ctx.quick,
                   "standby_replicas": ctx.settings.table_standby_replicas, "worker_env": WORKER_ENV,
                   "poll_s": POLL_S, "quick_backlog": ctx.quick and ctx.events > QUICK_EVENTS,
                   "scenarios": results},
        "figures": figures,
        "ratios": {"two_vs_one": ratio(label="two workers / one worker", numerator=figures["two_workers_eps"],
                                       denominator=figures["one_worker_eps"])},
    }


def _cores(values: Sequence[float]) -> str:
    return " + ".join(f"{v:.2f}" for v in values)


def _demand(scenario: dict[str, Any]) -> str:
    return " + ".join(f"{c + w:.2f}" for c, w in zip(scenario["worker_cores"], scenario["worker_waiting_cores"]))


def _busy(scenario: dict[str, Any]) -> str:
    """Busy cores of a scenario's window and who used them."""
    parts = [f"worker{'s' if scenario['workers'] > 1 else ''} {_cores(scenario['worker_cores'])}"]
    if scenario.get("broker_cores") is not None:
        parts.append(f"Kafka broker {scenario['broker_cores']:.2f}")
    parts.append(f"this benchmark {scenario['bench_process_cores']:.2f}")
    parts.append(f"everything else {scenario['other_cores']:.2f}" if scenario.get("broker_cores") is not None
                 else f"the Kafka broker and everything else {scenario['other_cores']:.2f}")
    return f"**{scenario['machine_busy_cores']:.2f}** ({', '.join(parts)})"


def markdown(result: dict[str, Any]) -> str:
    params, figs, ratios = result["params"], result["figures"], result["ratios"]
    one, two = params["scenarios"]["1w"], params["scenarios"]["2w"]
    lines = [
        f"{workload_phrase(params)} through `{params['agent']}`; `job-lifecycle` has "
        f"{params['partitions']} partitions; RabbitMQ bridge off. (1) One worker; (2) two workers with the same app "
        "id (one consumer group), each with its own data dir (RocksDB) and web port; each scenario on topics and a "
        "group of its own, the same workload. The workers start on empty topics. Once the group coordinator "
        "describes the group as Stable with every partition held by exactly one worker, and every worker serves "
        "from its tables (not rebalancing), the backlog is published (records encoded beforehand; acks=all). The "
        "rate is the events handled (summed over the workers' `/metrics`, polled every "
        f"{params['poll_s']:g} s) from the first poll after the publisher's last ack to the poll that saw all of "
        "them, over that time: steady state, without start-up, rebalancing or a publisher competing for the CPU — "
        "but with the tail where one worker has finished its partitions and the other has not (see the shares). "
        "One run each.",
        "",
        "| workers | throughput | events counted | window | share per worker | CPU per worker | waiting for a "
        "core, per worker | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, scenario in (("one_worker_eps", one), ("two_workers_eps", two)):
        machine = scenario["machine"]
        lines.append(
            f"| {figs[key]['label']} | **{fmt(figs[key]['value'], figs[key]['unit'])}** | "
            f"{scenario['counted_events']:,.0f} ({scenario['backlog_at_start_pct']:.0f} % of the backlog) | "
            f"{scenario['window_s']:.2f} s | {' / '.join(f'{s:.0f} %' for s in scenario['share_pct'])} | "
            f"{_cores(scenario['worker_cores'])} cores | {_cores(scenario['worker_waiting_cores'])} cores | "
            f"{scenario['machine_busy_cores']:.2f} of {scenario['machine_cores']} cores "
            f"({machine.get('busy_pct', 0):.0f} %; {machine.get('steal_pct', 0):.0f} % stolen) |")
    value = ratios["two_vs_one"]["value"]
    lines += ["", "| ratio | value |", "| --- | --- |",
              f"| {ratios['two_vs_one']['label']} | {value:.3f} × ({value * 100:.1f} %) |", ""]
    cores = two["machine_cores"]
    lines.append(f"**Cores busy** (of the machine's {cores}): with one worker {_busy(one)}; with two workers "
                 f"{_busy(two)}.")
    lines.append("")
    notes = [
        "CPU wanted per worker (used + runnable but waiting for a core): "
        f"{_demand(one)} with one worker, {_demand(two)} with two — a worker's agents share one Python event "
        "loop, so about one core is what a worker can use, and a second worker needs a second core."]
    if two["machine_busy_cores"] >= SATURATED * cores:
        notes.append("No core was idle with two workers"
                     + (", so the shortfall from 2× is at least partly this machine's CPU (shared with the broker), "
                        "not how the group shares out partitions." if value < NEAR_LINEAR else
                        "; the two still about doubled the rate.")
                     + (" The machine was already saturated with one worker."
                        if one["machine_busy_cores"] >= SATURATED * cores else ""))
    else:
        notes.append(f"Cores were left idle with two workers ({cores - two['machine_busy_cores']:.2f}), so CPU did "
                     "not bound the second worker.")
    if abs(one["other_cores"] - two["other_cores"]) >= LOAD_SHIFT:
        notes.append(f"Other work on the machine used {one['other_cores']:.2f} cores during the one-worker window and "
                     f"{two['other_cores']:.2f} during the two-worker one: the figures were taken under different "
                     "loads, and the ratio carries that difference.")
    lines.append(" ".join(notes))
    lines[-1] += (
        f" Worker CPU per event handled: {one['worker_cpu_us_per_event']:,.0f} µs with one worker, "
        f"{two['worker_cpu_us_per_event']:,.0f} µs with two (each of two workers also keeps "
        f"{params['standby_replicas']} standby copy of the other's tables); an idle, settled worker used "
        f"{_cores(one['idle_worker_cores'] + two['idle_worker_cores'])} cores.")
    lines += ["", f"Partitions per worker with two: {' / '.join(map(str, two['partitions_per_worker']))}. "
              f"Workers ready after {one['worker_ready_s'][0]:.1f} s (one) and "
              f"{' / '.join(f'{s:.1f}' for s in two['worker_ready_s'])} s (two, started together), the group "
              f"settled {one['settle_s']:.1f} s / {two['settle_s']:.1f} s later (none of it counted); publishing "
              f"took {one['publish_s']:.2f} s / {two['publish_s']:.2f} s. The workers run with a 10 s Kafka "
              "session (heartbeat every second) so that a late joiner is admitted quickly."]
    if one["rebalanced_during_measurement"] or two["rebalanced_during_measurement"]:
        lines += ["", "**The group's assignment changed during the measurement** (a rebalance): the figure of "
                  "that scenario includes it."]
    if min(one["backlog_at_start_pct"], two["backlog_at_start_pct"]) < 50:
        lines += ["", "Less than half of the backlog was left when publishing ended: the window is short and "
                  "the figure coarse (use more events)."]
    if params.get("quick"):
        lines += ["", f"`--quick`: a {params['events']:,}-event backlog"
                  + (" (not the run's event count)" if params["quick_backlog"] else "")
                  + ", and all three workers started at once, so the idle two-worker group ran beside the one-worker "
                  "measurement; the figures only check the harness."]
    return "\n".join(lines) + "\n"
