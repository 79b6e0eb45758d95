"""One typed settings object, read from ``COSMIC_*`` environment variables.

Nothing here touches the network or the disk; ``Settings.from_env()`` only reads
``os.environ``. Secrets (passwords inside URLs, JWT keys) are never defaulted to
real values in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from app.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_data_dir() -> Path:
    return PROJECT_ROOT / ".data"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the service. Field ``foo_bar`` is read from ``COSMIC_FOO_BAR``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    schema_registry_url: str = "http://127.0.0.1:8081"
    #: The address the web server listens on (``0.0.0.0``: every interface).
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: The host the other workers of the group reach this one at: Faust's canonical URL
    #: ``http://<host>:COSMIC_WEB_PORT``, where owner-routed table reads are forwarded and by
    #: which the group's partition map knows this worker. Empty: ``COSMIC_WEB_HOST``.
    web_advertised_host: str = ""
    data_dir: Path = field(default_factory=_default_data_dir)
    #: The local stack's home; empty = ``<data_dir>/stack``. Lets a worker with its own data
    #: dir (tests, a second worker) use the stack another data dir started.
    stack_home: str = ""
    app_id: str = "cosmic-horizons"
    replication_factor: int = 1
    topic_prefix: str = ""
    log_level: str = "info"
    #: Faust table store: RocksDB (rocksdict driver) for workers; ``memory://`` in unit tests.
    store: str = "rocksdb://"
    #: Register the topics' schemas on first use (local default); off in production,
    #: where schemas are registered by a deploy step and the worker only looks them up.
    schema_auto_register: bool = True
    #: Largest ``POST /api/events`` body accepted (bytes); larger bodies get 413.
    ingest_max_bytes: int = 1_048_576
    #: Notification webhooks: seconds one POST may take (connect + answer) before it counts
    #: as a transient failure and is retried.
    webhook_timeout_seconds: float = 5.0
    #: SMTP server for EMAIL notifications, ``smtp://[user:password@]host[:port]`` (add
    #: ``?starttls=1`` for STARTTLS) or ``smtps://…`` (implicit TLS); empty = email off.
    smtp_url: str = ""
    #: The From address of notification emails.
    smtp_from: str = "cosmic-horizons@localhost"
    #: Webhooks: seconds to open the connection; connections open at once in all and per
    #: receiver host (the worker's one HTTP session).
    webhook_connect_timeout_seconds: float = 3.0
    webhook_max_connections: int = 100
    webhook_max_connections_per_host: int = 4
    #: Networks webhooks may go to although they are internal (loopback, private, link-local
    #: …): comma-separated CIDRs, e.g. ``10.20.0.0/16``. Empty: only public addresses.
    webhook_allowed_networks: str = ""
    #: Master key of the per-user webhook signing secrets (``app/core/webhook_signing.py``);
    #: empty = derived from ``COSMIC_JWT_SECRET``. Changing it changes every user's secret.
    webhook_signing_key: str = ""
    #: Notification delivery workers (RabbitMQ queue ``notification-delivery``): messages
    #: fetched ahead (prefetch) and delivered at once per worker.
    notification_delivery_prefetch: int = 64
    notification_delivery_concurrency: int = 32
    #: Attempts for an event whose handler hits a retriable error (broker or webhook down)
    #: before it is dead-lettered; backoff doubles from 0.5 s, capped at 8 s.
    max_attempts: int = 5
    #: Agents take events in batches of at most this many, waiting at most this long for a
    #: batch to fill (ms): each batch's table keys are written once and its effects awaited once.
    batch_max_events: int = 1000
    batch_max_wait_ms: float = 20.0
    #: The wait of the agents whose records nobody waits on at publish time — the audit trail,
    #: notifications and system health, fed mostly by what the lifecycle agent emits (ms): their
    #: batches hold more records, so they take less of the worker's one thread from the
    #: lifecycle agent (docs/profiles.md); an idle one hands a record over within this.
    background_batch_max_wait_ms: float = 250.0
    #: How long the worker's producer waits to fill a request (ms): a batch's effects and
    #: changelog records then travel in a few produce requests instead of one each.
    producer_linger_ms: float = 5.0
    #: How long the broker may hold the worker's fetch request when no partition in it has a new
    #: record (ms). A partition the worker resumes (after a rebalance, after its buffer drained)
    #: is fetched only once the request in flight to its broker returns: this bounds that wait.
    #: Faust's own is 1,500 ms (app/worker/faust_internals/fetch.py).
    consumer_fetch_max_wait_ms: int = 100
    #: RabbitMQ publisher confirms outstanding at once per agent batch (the bridge's window).
    rabbitmq_confirm_window: int = 256
    #: A retriable FAILED job may go back to QUEUED this many times.
    max_job_retries: int = 3
    #: How long processed event ids are remembered for deduplication (hours).
    dedupe_window_hours: int = 168
    #: How far an event's ``timestamp`` may lie in the past when it is published (seconds):
    #: older ones are refused (400), and a source topic's consumer dead-letters a record stamped
    #: more than this before the newest one of its partition. A replay window is exact because
    #: of it (``app/ops/replay.py``).
    max_event_lateness: float = 3600.0
    #: How far in the future an event's ``timestamp`` may lie when it is published (seconds).
    max_clock_skew: float = 300.0
    #: JWT verification: an HS256 shared secret, or the path of an RS256 public key (PEM).
    #: With neither set, every authenticated endpoint refuses (401).
    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    jwt_audience: str = "cosmic-horizons"
    jwt_operator_role: str = "operator"
    #: The role whose tokens may publish events (``POST /api/events``); operators may too.
    jwt_publisher_role: str = "publisher"
    #: RabbitMQ queue type of the declared topology: ``classic`` (one local node) or
    #: ``quorum`` (a cluster: reject-publish overflow and at-least-once dead-lettering).
    rabbitmq_queue_type: str = "classic"
    #: Copy job-lifecycle, notifications and job-metrics events to RabbitMQ (the bridge).
    rabbitmq_bridge_enabled: bool = True
    #: Attempts of a RabbitMQ consumer's handler before the message goes to ``job-dlq``.
    rabbitmq_max_attempts: int = 7
    #: Seconds before each retry of a RabbitMQ consumer's message, comma-separated, the last one
    #: repeating: one retry queue ``<queue>.retry.<n>s`` per delay (a message's TTL there).
    rabbitmq_retry_delays: str = "1,2,4,8,16,30"
    #: Log line format: ``text`` (human) or ``json`` (one object per line, with
    #: correlation_id and job_id on every line about an event).
    log_format: str = "text"
    #: Websocket feed (/ws): allowed Origin values, comma-separated (empty = only the
    #: server's own origin); server ping interval; per-connection send queue (frames) beyond
    #: which a slow client is closed; largest client frame; seconds to authenticate.
    ws_allowed_origins: str = ""
    ws_ping_seconds: float = 25.0
    ws_send_queue: int = 1000
    ws_max_frame_bytes: int = 65536
    ws_auth_timeout_seconds: float = 10.0
    #: Health: seconds between a worker's health reports to system-health; alert thresholds.
    health_interval_seconds: float = 5.0
    alert_lag_threshold: int = 10000
    alert_stall_seconds: float = 60.0
    alert_dlq_growth: int = 1
    #: Anomaly detection on job runtimes (per job type): samples needed before alerting,
    #: the deviation in standard deviations, and the overrun ratio for running jobs.
    anomaly_min_samples: int = 10
    anomaly_sigma: float = 2.0
    anomaly_overrun_ratio: float = 1.5
    #: Standby replicas of every table on other workers of the group (faster fail-over).
    table_standby_replicas: int = 1
    #: Seconds without a heartbeat before the group coordinator declares a worker dead and
    #: moves its partitions (Kafka's session.timeout.ms); heartbeats every tenth of it.
    broker_session_timeout_seconds: float = 60.0
    #: Reads that span partitions (``GET /api/jobs``, ``/api/stats``, …) gather the part of every
    #: other worker of the group: seconds one part may take before the answer is 503 (or partial).
    gather_timeout_seconds: float = 5.0
    #: The worker's garbage-collector policy (app/worker/gc_policy.py): larger thresholds and start-up
    #: objects frozen, so a heap of many connections is not scanned in one long pause.
    gc_tuning: bool = True
    #: Run the worker on uvloop's event loop (faster than asyncio's; see docs/profiles.md).
    uvloop: bool = True

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``COSMIC_*`` variables; unknown values raise ConfigError."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"COSMIC_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(name=f.name, raw=raw, kind=f.type)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"COSMIC_WEB_PORT must be a TCP port, got {self.web_port}")
        if any(c in self.web_advertised_host for c in "/:@ "):
            raise ConfigError(f"COSMIC_WEB_ADVERTISED_HOST must be a host name or IPv4 address, got "
                              f"{self.web_advertised_host!r}")
        if self.replication_factor < 1:
            raise ConfigError("COSMIC_REPLICATION_FACTOR must be at least 1")
        if not self.webhook_timeout_seconds > 0:
            raise ConfigError("COSMIC_WEBHOOK_TIMEOUT_SECONDS must be a positive number of seconds")
        if not self.webhook_connect_timeout_seconds > 0 or self.webhook_max_connections < 1 \
                or self.webhook_max_connections_per_host < 0:
            raise ConfigError("COSMIC_WEBHOOK_CONNECT_TIMEOUT_SECONDS > 0, COSMIC_WEBHOOK_MAX_CONNECTIONS >= 1 and "
                              "COSMIC_WEBHOOK_MAX_CONNECTIONS_PER_HOST >= 0 (0: no limit) are required")
        self.webhook_networks  # noqa: B018 - raises ConfigError on a bad CIDR
        if self.notification_delivery_prefetch < 1 or self.notification_delivery_concurrency < 1:
            raise ConfigError("COSMIC_NOTIFICATION_DELIVERY_PREFETCH and COSMIC_NOTIFICATION_DELIVERY_CONCURRENCY "
                              "must be at least 1")
        if self.smtp_url and urlsplit(self.smtp_url).scheme not in ("smtp", "smtps"):
            raise ConfigError("COSMIC_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        if self.rabbitmq_queue_type not in ("classic", "quorum"):
            raise ConfigError("COSMIC_RABBITMQ_QUEUE_TYPE must be classic or quorum")
        if self.rabbitmq_max_attempts < 1:
            raise ConfigError("COSMIC_RABBITMQ_MAX_ATTEMPTS must be at least 1")
        self.retry_delays  # noqa: B018 - raises ConfigError on a bad schedule
        if not 1 <= self.consumer_fetch_max_wait_ms <= 30000:
            raise ConfigError("COSMIC_CONSUMER_FETCH_MAX_WAIT_MS must be from 1 to 30000")
        if self.producer_linger_ms < 0:
            raise ConfigError("COSMIC_PRODUCER_LINGER_MS must be 0 or more")
        if (self.batch_max_events < 1 or not self.batch_max_wait_ms > 0 or not self.background_batch_max_wait_ms > 0
                or self.rabbitmq_confirm_window < 1):
            raise ConfigError("COSMIC_BATCH_MAX_EVENTS >= 1, COSMIC_BATCH_MAX_WAIT_MS > 0, "
                              "COSMIC_BACKGROUND_BATCH_MAX_WAIT_MS > 0 and COSMIC_RABBITMQ_CONFIRM_WINDOW >= 1 "
                              "are required")
        if self.log_format not in ("text", "json"):
            raise ConfigError("COSMIC_LOG_FORMAT must be text or json")
        if self.ws_send_queue < 1 or self.ws_max_frame_bytes < 256:
            raise ConfigError("COSMIC_WS_SEND_QUEUE must be >= 1 and COSMIC_WS_MAX_FRAME_BYTES >= 256")
        if not (self.ws_ping_seconds > 0 and self.health_interval_seconds > 0):
            raise ConfigError("COSMIC_WS_PING_SECONDS and COSMIC_HEALTH_INTERVAL_SECONDS must be positive")
        if self.anomaly_min_samples < 2 or not self.anomaly_sigma > 0 or not self.anomaly_overrun_ratio > 1:
            raise ConfigError("COSMIC_ANOMALY_MIN_SAMPLES >= 2, COSMIC_ANOMALY_SIGMA > 0, "
                              "COSMIC_ANOMALY_OVERRUN_RATIO > 1 are required")
        if not 0 < self.max_event_lateness <= 7 * 86400:
            raise ConfigError("COSMIC_MAX_EVENT_LATENESS must be more than 0 and at most 604800 seconds (7 days)")
        if not 0 <= self.max_clock_skew <= 3600:
            raise ConfigError("COSMIC_MAX_CLOCK_SKEW must be from 0 to 3600 seconds (Kafka refuses records "
                              "stamped more than 1 h ahead)")
        if self.table_standby_replicas < 0:
            raise ConfigError("COSMIC_TABLE_STANDBY_REPLICAS must be 0 or more")
        if not 6 <= self.broker_session_timeout_seconds <= 300:
            raise ConfigError("COSMIC_BROKER_SESSION_TIMEOUT_SECONDS must be between 6 and 300")
        if not 0 < self.gather_timeout_seconds <= 300:
            raise ConfigError("COSMIC_GATHER_TIMEOUT_SECONDS must be more than 0 and at most 300")
        if not self.kafka_bootstrap.strip():
            raise ConfigError("COSMIC_KAFKA_BOOTSTRAP must name at least one host:port")

    @property
    def kafka_broker_url(self) -> str:
        """The bootstrap list in Faust's ``kafka://h1:p1;h2:p2`` form."""
        hosts = [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)

    @property
    def rabbitmq_url_redacted(self) -> str:
        """The RabbitMQ URL with its password replaced, safe to log."""
        return redact_url(self.rabbitmq_url)

    @property
    def ws_origins(self) -> tuple[str, ...]:
        """The allowed websocket Origin values (``COSMIC_WS_ALLOWED_ORIGINS``)."""
        return tuple(o.strip().rstrip("/") for o in self.ws_allowed_origins.split(",") if o.strip())

    @property
    def webhook_networks(self) -> tuple:
        """``COSMIC_WEBHOOK_ALLOWED_NETWORKS`` parsed (ConfigError on a bad CIDR)."""
        from app.core.net_guard import parse_networks

        return parse_networks(self.webhook_allowed_networks)

    @property
    def retry_delays(self) -> tuple[int, ...]:
        """``COSMIC_RABBITMQ_RETRY_DELAYS`` parsed: whole seconds, increasing (ConfigError otherwise)."""
        try:
            delays = tuple(int(part) for part in self.rabbitmq_retry_delays.split(","))
        except ValueError:
            delays = ()
        if not delays or delays[0] < 1 or any(b <= a for a, b in zip(delays, delays[1:])) or delays[-1] > 86400:
            raise ConfigError("COSMIC_RABBITMQ_RETRY_DELAYS must be increasing whole seconds from 1 to 86400, "
                              f"comma-separated (e.g. 1,2,4,8,16,30), got {self.rabbitmq_retry_delays!r}")
        return delays

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir / "worker"

    @property
    def stack_dir(self) -> Path:
        """Where the local stack keeps its servers' data and logs (``COSMIC_STACK_HOME``)."""
        return Path(self.stack_home).expanduser() if self.stack_home else self.data_dir / "stack"


def redact_url(url: str) -> str:
    """Replace the password of ``scheme://user:password@host`` with ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _convert(*, name: str, raw: str, kind: object) -> object:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "int":
            return int(raw)
        if kind_name == "float":
            return float(raw)
        if kind_name == "Path":
            return Path(raw).expanduser()
        if kind_name == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ConfigError(f"COSMIC_{name.upper()}={raw!r} is not a valid {kind_name}") from exc
    return raw
