"""Topics as code: name, partitions, retention, cleanup policy and key of every topic (seed 001).

Pure data: :mod:`app.ops.topic_admin` creates and checks them on a broker, :mod:`app.worker.topics`
declares the Faust topic objects.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000
DLQ_SUFFIX = ".dlq"

# The topic names (unprefixed): the one place they are spelled.
JOB_LIFECYCLE = "job-lifecycle"
JOB_METRICS = "job-metrics"
AUDIT_TRAIL = "audit-trail"
NOTIFICATIONS = "notifications"
SYSTEM_HEALTH = "system-health"
NOTIFICATION_PREFERENCES = "notification-preferences"
NOTIFICATION_OUTCOMES = "notification-outcomes"


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    key: str
    cleanup_policy: str = "delete"
    has_dead_letter: bool = True
    description: str = ""
    #: Further topic-level configs, e.g. ``(("min.compaction.lag.ms", "60000"),)``.
    extra_configs: tuple[tuple[str, str], ...] = ()

    def configs(self) -> dict[str, str]:
        """The topic-level Kafka configs this spec sets (and ``ensure`` checks for drift).

        ``retention.ms`` only where records are deleted by age: a compacted-only topic keeps
        the latest record of every key for ever, whatever its retention.
        """
        configs = {"cleanup.policy": self.cleanup_policy}
        if "delete" in self.cleanup_policy.split(","):
            configs["retention.ms"] = str(self.retention_ms)
        configs.update(self.extra_configs)
        return configs

    def dead_letter(self) -> "TopicSpec":
        """The ``<topic>.dlq`` companion: same partitions, same retention, keyed like its source."""
        return TopicSpec(
            name=self.name + DLQ_SUFFIX,
            partitions=self.partitions,
            retention_ms=self.retention_ms,
            key=self.key,
            has_dead_letter=False,
            description=f"dead letters of {self.name}: the event plus error, reason and origin",
        )


#: The input topics of seed 001; each has a dead-letter topic ``<name>.dlq``.
SOURCE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(name=JOB_LIFECYCLE, partitions=10, retention_ms=30 * DAY_MS, key="job_id",
              description="job state changes, keyed by job_id so each job's events stay in order"),
    TopicSpec(name=JOB_METRICS, partitions=20, retention_ms=30 * DAY_MS, key="job_id",
              description="resource-usage samples of running jobs"),
    TopicSpec(name=AUDIT_TRAIL, partitions=5, retention_ms=90 * DAY_MS, key="resource_id",
              description="who did what to which resource, hash-chained per partition"),
    TopicSpec(name=NOTIFICATIONS, partitions=5, retention_ms=7 * DAY_MS, key="user_id",
              description="notifications to users"),
    TopicSpec(name=SYSTEM_HEALTH, partitions=3, retention_ms=7 * DAY_MS, key="component",
              description="health reports and alerts of workers and components"),
)


#: Topics the service adds beyond seed 001 (no dead-letter topics of their own).
EXTRA_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(name=NOTIFICATION_PREFERENCES, partitions=5, retention_ms=-1, key="user_id",
              cleanup_policy="compact", has_dead_letter=False,
              description="each user's notification preferences (latest per user; JSON), "
                          "co-partitioned with notifications"),
    TopicSpec(name=NOTIFICATION_OUTCOMES, partitions=5, retention_ms=7 * DAY_MS, key="user_id",
              has_dead_letter=False,
              description="outcome of each webhook/email delivery attempt (JSON), co-partitioned with "
                          "notifications"),
)


def all_topic_specs() -> tuple[TopicSpec, ...]:
    """Every topic the service needs: the sources, their dead-letter topics, the extras."""
    specs: list[TopicSpec] = []
    for spec in SOURCE_TOPICS + EXTRA_TOPICS:
        specs.append(spec)
        if spec.has_dead_letter:
            specs.append(spec.dead_letter())
    return tuple(specs)


def spec_by_name(name: str) -> TopicSpec:
    for spec in all_topic_specs():
        if spec.name == name:
            return spec
    raise KeyError(name)


def unprefixed(*, topic: str, prefix: str) -> str:
    """``topic`` without the ``COSMIC_TOPIC_PREFIX`` ``prefix`` (unchanged when it does not start with it)."""
    return topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
