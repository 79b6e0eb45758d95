"""Create the topics of :mod:`app.core.topic_specs` on a broker and report drift; never delete."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.core.errors import CosmicError
from app.core.topic_specs import TopicSpec, all_topic_specs


class TopicAdminError(CosmicError):
    """Talking to the Kafka admin API failed."""


@dataclass(kw_only=True)
class TopicReport:
    name: str
    created: bool = False
    partitions: int | None = None
    replication_factor: int | None = None
    configs: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)

    def line(self) -> str:
        state = "created" if self.created else ("DRIFT" if self.drift else "ok")
        text = f"{self.name:<24} {state:<8} partitions={self.partitions} rf={self.replication_factor}"
        if self.drift:
            text += "  " + "; ".join(self.drift)
        return text


def full_name(*, spec: TopicSpec, prefix: str) -> str:
    return f"{prefix}{spec.name}"


async def ensure_topics(
    *, bootstrap: str, replication_factor: int, prefix: str = "",
    specs: tuple[TopicSpec, ...] | None = None,
) -> list[TopicReport]:
    """Create missing topics; for existing ones report partition/config drift without changing them."""
    specs = specs or all_topic_specs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        reports: list[TopicReport] = []
        to_create = [s for s in specs if full_name(spec=s, prefix=prefix) not in existing]
        created = await _create_missing(admin=admin, topics=[
            NewTopic(full_name(spec=spec, prefix=prefix), spec.partitions, replication_factor,
                     topic_configs=spec.configs())
            for spec in to_create
        ])
        names = [full_name(spec=s, prefix=prefix) for s in specs]
        described = await _describe_when_visible(admin=admin, names=names)
        await wait_until_served(admin=admin, bootstrap=bootstrap, names=sorted(created))
        for spec in specs:
            name = full_name(spec=spec, prefix=prefix)
            report = described[name]
            report.created = name in created
            if report.partitions != spec.partitions:
                report.drift.append(f"partitions {report.partitions} (spec {spec.partitions})")
            if report.replication_factor != replication_factor:
                report.drift.append(
                    f"replication factor {report.replication_factor} (settings {replication_factor})"
                )
            for key, want in spec.configs().items():
                have = report.configs.get(key)
                if have != want:
                    report.drift.append(f"{key}={have} (spec {want})")
            reports.append(report)
        return reports
    except KafkaError as exc:
        raise TopicAdminError(f"Kafka admin request to {bootstrap} failed: {exc!r}") from exc
    finally:
        await admin.close()


async def _create_missing(*, admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> set[str]:
    """Create ``topics`` in one request; the names this request created.

    A topic created moments ago may not be listed yet: the broker then answers
    TopicAlreadyExists, and the topic counts as existing (never as created by us)."""
    if not topics:
        return set()
    try:
        response = await admin.create_topics(topics)
    except TopicAlreadyExistsError:  # a broker answering for the whole request
        return set()
    errors = {topic_error[0]: topic_error for topic_error in getattr(response, "topic_errors", [])}
    created: set[str] = set()
    for new in topics:
        topic_error = errors.get(new.name)
        code = topic_error[1] if topic_error else 0
        if code == 0:
            created.add(new.name)
        elif code != TopicAlreadyExistsError.errno:
            message = topic_error[2] if len(topic_error) > 2 else ""
            raise TopicAdminError(f"creating topic {new.name} failed: error {code} {message}")
    return created


async def describe_topics(*, admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, TopicReport]:
    """Partitions, replication factor and topic configs of ``names`` as the broker sees them."""
    reports: dict[str, TopicReport] = {}
    metadata = await admin.describe_topics(names)
    for topic in metadata:
        name = topic["topic"]
        partitions = topic.get("partitions") or [] if topic.get("error_code", 0) == 0 else []
        rf = len(partitions[0]["replicas"]) if partitions else None
        reports[name] = TopicReport(name=name, partitions=len(partitions) or None, replication_factor=rf)
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            _code, _msg, _type, name, entries = resource[:5]
            if name in reports:
                reports[name].configs = {entry[0]: entry[1] for entry in entries}
    return reports


async def _describe_when_visible(
    *, admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0
) -> dict[str, TopicReport]:
    """Describe ``names``, retrying while freshly created topics are not in metadata yet."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await describe_topics(admin=admin, names=names)
        # A topic always has configs (every default is listed): none yet means the broker
        # that answered does not know the new topic yet, not that it has no settings.
        pending = [n for n in names
                   if n not in described or described[n].partitions is None or not described[n].configs]
        if not pending:
            return described
        if asyncio.get_running_loop().time() > deadline:
            raise TopicAdminError(f"topics not visible in metadata after {timeout:.0f} s: {pending}")
        await asyncio.sleep(0.1)


async def wait_until_served(*, admin: AIOKafkaAdminClient, bootstrap: str, names: list[str],
                            timeout: float = 30.0) -> None:
    """Return once the broker answers offset requests for every partition of ``names``.

    A new topic is listed, and its partitions have leaders in the metadata, before the broker
    serves them: a consumer asking for offsets meanwhile gets NotLeaderForPartition, and Faust
    retries after a pause (3 s of a fresh worker's start-up, measured 2026-12-07). Waiting here
    until a plain consumer gets every partition's end offset (aiokafka retries those errors)
    takes a few hundred ms and closes that."""
    if not names:
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        partitions: list[TopicPartition] = []
        pending = []
        for topic in await admin.describe_topics(names):
            listed = topic.get("partitions") or []
            if topic.get("error_code", 0) != 0 or not listed or any(p.get("leader", -1) < 0 for p in listed):
                pending.append(topic["topic"])
            partitions += [TopicPartition(topic["topic"], p["partition"]) for p in listed]
        if not pending:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise TopicAdminError(f"partitions without a leader after {timeout:.0f} s: {sorted(pending)}")
        await asyncio.sleep(0.05)
    remaining_ms = max(1000, int((deadline - asyncio.get_running_loop().time()) * 1000))
    # Assigned first, so the consumer's metadata covers every topic at once: asked for the
    # offsets of topics it does not know, aiokafka learns them one topic per retry (100 ms
    # each: 2.5 s for a worker's 25 changelog topics, measured 2026-12-07), while the broker
    # serves 250 new partitions within about a second.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=remaining_ms,
                                enable_auto_commit=False, retry_backoff_ms=25)
    quiet = _DropNotLeaderWarnings()
    fetcher_log = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher_log.addFilter(quiet)
    try:
        await consumer.start()
        consumer.assign(partitions)
        await consumer.end_offsets(partitions)
    finally:
        fetcher_log.removeFilter(quiet)
        await consumer.stop()


class _DropNotLeaderWarnings(logging.Filter):
    """aiokafka warns of every NotLeaderForPartition answer it retries: expected while the
    broker makes itself leader of new partitions, so not shown during that wait."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NotLeaderForPartition" not in record.getMessage()


async def describe_live(*, bootstrap: str, prefix: str = "") -> list[TopicReport]:
    """The live state of every spec'd topic that exists (for ``cosmic topics describe``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        names = [full_name(spec=s, prefix=prefix) for s in all_topic_specs()]
        present = [n for n in names if n in existing]
        described = await describe_topics(admin=admin, names=present) if present else {}
        return [described.get(n, TopicReport(name=n, drift=["missing"])) for n in names]
    except KafkaError as exc:
        raise TopicAdminError(f"Kafka admin request to {bootstrap} failed: {exc!r}") from exc
    finally:
        await admin.close()


async def ensure_changelog_topics(*, app: object, bootstrap: str, timeout: float = 60.0) -> list[str]:
    """Create the changelog topics of every table of ``app`` (a finalized Faust app) exactly as
    Faust would, and wait until the broker's metadata lists them; the names created.

    Faust creates them itself at start-up, one by one, right before the consumer group joins;
    a group whose metadata does not list a topic yet ignores it ("Ignoring missing topic"), so
    that table's partitions are not assigned until the next metadata refresh, minutes later.
    Creating them first closes that window."""
    from mode.utils.times import want_seconds

    conf = app.conf  # type: ignore[attr-defined]
    wanted: dict[str, NewTopic] = {}
    for table in app.tables.values():  # type: ignore[attr-defined]
        topic = table.changelog_topic
        configs: dict[str, str] = {}
        flags = {flag for flag, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on}
        if flags:
            configs["cleanup.policy"] = ",".join(sorted(flags))
        if topic.retention:
            configs["retention.ms"] = str(int(want_seconds(topic.retention) * 1000.0))
        configs.update({k: str(v) for k, v in (topic.config or {}).items()})
        name = topic.get_topic_name()
        wanted[name] = NewTopic(name, topic.partitions or conf.topic_partitions,
                                topic.replicas or conf.topic_replication_factor, topic_configs=configs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [new for name, new in wanted.items() if name not in existing]
        await _create_missing(admin=admin, topics=missing)
        deadline = asyncio.get_running_loop().time() + timeout
        while missing:
            listed = set(await admin.list_topics())
            if all(new.name in listed for new in missing):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TopicAdminError("changelog topics not visible in the broker's metadata after "
                                      f"{timeout:.0f} s: {sorted(n.name for n in missing if n.name not in listed)}")
            await asyncio.sleep(0.2)
        await wait_until_served(admin=admin, bootstrap=bootstrap, names=[new.name for new in missing])
        return [new.name for new in missing]
    except KafkaError as exc:
        raise TopicAdminError(f"creating changelog topics failed: {exc!r}") from exc
    finally:
        await admin.close()
