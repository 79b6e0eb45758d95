"""What every section gets: isolated settings (own topic prefix and app id), sizes, helpers."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from app.core.codecs import Codecs
from app.core.models import JobEvent
from app.core.settings import Settings
from app.ops.demo import lifecycle_events

T = TypeVar("T")


class BenchError(RuntimeError):
    """A measurement could not be taken (the run fails; no report is written)."""


@dataclass(kw_only=True)
class BenchContext:
    """Shared by the sections of one run; ``settings`` carry the run's own prefix and app id."""

    settings: Settings
    run_id: str
    quick: bool
    events: int
    codec_repetitions: int
    ingest_repetitions: int
    batch_size: int
    http_concurrency: int
    workdir: Path
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    _codecs: Codecs | None = None

    @property
    def topic_prefix(self) -> str:
        return self.settings.topic_prefix

    @property
    def codecs(self) -> Codecs:
        """One Codecs for the run (schemas registered under the run's prefixed subjects)."""
        if self._codecs is None:
            self._codecs = Codecs(settings=self.settings)
        return self._codecs


def make_events(n: int, *, seed: int = 7) -> list[JobEvent]:
    """``n`` valid job-lifecycle events: whole lifecycles (submitted, queued, running, outcome)
    of fresh jobs, so the mix is ~25 % each of JobSubmitted, JobQueued, JobStatusChanged and an
    outcome (JobCompleted / JobFailed / JobCancelled). New event ids on every call."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    events: list[JobEvent] = []
    job = 0
    while len(events) < n:
        job += 1
        events.extend(
            lifecycle_events(job_id=f"bench-{run}-{job}", user_id=f"user-{rng.randint(1, 50)}", rng=rng)
        )
    return events[:n]


def event_mix(events: Sequence[Any]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for event in events:
        mix[event.event_type] = mix.get(event.event_type, 0) + 1
    return dict(sorted(mix.items()))


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of this thread, wall-clock seconds) that ``fn()`` took.

    The thread's CPU time (``time.thread_time``) leaves out time the thread waited for a core
    — other processes, or a hypervisor stealing the VM's CPU — so it is the steadier measure of
    pure-Python cost; the wall-clock time is kept next to it."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.thread_time() - cpu, time.perf_counter() - wall


def figure(*, label: str, unit: str, runs: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """One reported number: the median of ``runs``, with the runs and their range kept."""
    if not runs:
        raise BenchError(f"no runs for {label}")
    return {
        "label": label,
        "unit": unit,
        "value": round(statistics.median(runs), digits),
        "min": round(min(runs), digits),
        "max": round(max(runs), digits),
        "runs": [round(r, digits) for r in runs],
        "repetitions": len(runs),
    }


def ratio(*, label: str, numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any]:
    """A ratio of two figures' medians (unitless; the unit field says what over what)."""
    value = numerator["value"] / denominator["value"]
    return {"label": label, "unit": "ratio", "value": round(value, 3), "repetitions": 1}


def fmt(value: float, unit: str) -> str:
    """A figure with its unit, formatted for the report."""
    if unit == "ratio":
        return f"{value:.3f} × ({value * 100:.1f} %)"
    if unit == "events/s":
        return f"{value:,.0f} events/s"
    if unit == "s":
        return f"{value:.2f} s"
    if unit in ("bytes/event", "events"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


_HANDLED = re.compile(r'^cosmic_processing_seconds_count\{agent="([^"]+)"\} ([0-9.e+]+)$', re.M)


def handled_by_agent(base_url: str) -> dict[str, float]:
    """Events handled so far per agent, from a worker's ``/metrics``."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {agent: float(count) for agent, count in _HANDLED.findall(text)}


async def wait_quiet(*, base_url: str, quiet_s: float, deadline: float, poll_s: float = 0.25,
                     on_change: Callable[[], None] | None = None) -> dict[str, float]:
    """Poll a worker's handled counts per agent (:func:`handled_by_agent`) until none changed for
    ``quiet_s`` (or ``time.monotonic()`` passes ``deadline``); return the last counts.
    ``on_change`` runs now and at every change seen, e.g. to read a CPU meter at the moment
    the last agent finished."""
    counts, quiet_since = await asyncio.to_thread(handled_by_agent, base_url), time.monotonic()
    if on_change is not None:
        on_change()
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        latest = await asyncio.to_thread(handled_by_agent, base_url)
        if latest != counts:
            counts, quiet_since = latest, time.monotonic()
            if on_change is not None:
                on_change()
    return counts


@dataclass(frozen=True, kw_only=True)
class PacedSend:
    """What :func:`publish_paced` did: each event's send moment, when it started (perf_counter)."""

    sent_at: dict[str, float]
    sent: int
    started: float
    seconds: float
    max_in_flight: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


async def bridged_worker(ctx: BenchContext, *, name: str, vhost_url: str, **overrides: Any
                         ) -> tuple[Settings, Codecs, Any]:
    """(settings, codecs, worker) of a section that runs a worker with the RabbitMQ bridge on:
    its own topic prefix and app id (no backlog from earlier sections' topics or consumer group),
    RabbitMQ at ``vhost_url``, topics created and schemas registered; the worker is not started.
    ``overrides`` are further settings (also passed to the worker's environment)."""
    import dataclasses

    from app.ops.topic_admin import ensure_topics
    from bench.worker import BenchWorker

    settings = dataclasses.replace(ctx.settings, topic_prefix=f"{ctx.topic_prefix}{name}-",
                                   app_id=f"{ctx.settings.app_id}-{name}", rabbitmq_url=vhost_url, **overrides)
    codecs = Codecs(settings=settings)
    await ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                        prefix=settings.topic_prefix)
    await asyncio.to_thread(codecs.warm_up)
    workdir = ctx.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    worker = BenchWorker(settings=settings, workdir=workdir)
    worker.env["COSMIC_RABBITMQ_BRIDGE_ENABLED"] = "true"
    worker.env.update({f"COSMIC_{key.upper()}": str(value) for key, value in overrides.items()})
    return settings, codecs, worker


def workload_phrase(params: dict[str, Any]) -> str:
    """How the pipeline and scale sections describe their workload in the report."""
    return (f"{params['events']:,} job-lifecycle events ({params['jobs']:,} whole job lifecycles, "
            f"{params['duplicates']:,} sent twice, some pairs swapped)")


async def publish_paced(*, publisher: Any, events: Sequence[Any], rate: float, tick_s: float,
                        clock: Callable[[], float] = time.perf_counter) -> PacedSend:
    """Publish ``events`` at ``rate`` events/s and return once every ack is in.

    A batch every tick, each ``publish_many`` (acks awaited) in its own task, so a slow ack does
    not hold back the next batch; an event's send moment (``clock()``) is when its batch is
    handed over. A failed publish fails the call (the other batches are cancelled)."""
    per_tick = max(1, int(rate * tick_s))
    sent_at: dict[str, float] = {}
    in_flight: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    sent = max_in_flight = 0
    try:
        while sent < len(events):
            batch = events[sent:sent + per_tick]
            now = clock()
            for event in batch:
                sent_at[event.event_id] = now
            in_flight.append(asyncio.ensure_future(publisher.publish_many(batch)))
            sent += len(batch)
            for task in [t for t in in_flight if t.done()]:
                in_flight.remove(task)
                task.result()  # a PublishError fails the section
            max_in_flight = max(max_in_flight, len(in_flight))
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
    return PacedSend(sent_at=sent_at, sent=sent, started=started, seconds=time.perf_counter() - started,
                     max_in_flight=max_in_flight)


#: The longest event-time span of a bench workload: the worker dead-letters a record stamped
#: more than COSMIC_MAX_EVENT_LATENESS + COSMIC_MAX_CLOCK_SKEW (65 min by default) before the
#: newest record of its partition (``late-event``), which 4,000 jobs one second apart reached.
MAX_WORKLOAD_SPAN_S = 1800.0


def job_spacing(*, jobs: int) -> float:
    """Seconds of event time between two jobs' starts: 1, or less for a workload that would
    otherwise span more than :data:`MAX_WORKLOAD_SPAN_S`."""
    return min(1.0, MAX_WORKLOAD_SPAN_S / max(jobs, 1))


def workload_start(*, jobs: int) -> datetime:
    """Where a workload of ``jobs`` lifecycles, :func:`job_spacing` apart, starts so that none
    of its event times is in the future (Kafka refuses records stamped more than
    ``log.message.timestamp.after.max.ms``, 1 h, ahead of the broker)."""
    span = jobs * job_spacing(jobs=jobs)
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=span + 60)
