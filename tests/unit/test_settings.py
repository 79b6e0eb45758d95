from pathlib import Path

import pytest

from app.core.errors import ConfigError
from app.core.settings import Settings, redact_url


def test_defaults_match_the_documented_local_stack():
    s = Settings.from_env(environ={})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.schema_registry_url == "http://127.0.0.1:8081"
    assert s.web_port == 6066
    assert s.replication_factor == 1


def test_cosmic_variables_override_defaults():
    s = Settings.from_env(
        environ={
            "COSMIC_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "COSMIC_WEB_PORT": "7000",
            "COSMIC_DATA_DIR": "/srv/cosmic",
            "COSMIC_REPLICATION_FACTOR": "3",
        }
    )
    assert s.kafka_broker_url == "kafka://k1:9092;kafka://k2:9092"
    assert s.web_port == 7000
    assert s.data_dir == Path("/srv/cosmic")
    assert s.worker_data_dir == Path("/srv/cosmic/worker")
    assert s.replication_factor == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [("COSMIC_WEB_PORT", "http"), ("COSMIC_WEB_PORT", "70000"), ("COSMIC_REPLICATION_FACTOR", "0")],
)
def test_malformed_values_raise_config_error_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(environ={name: value})


def test_passwords_are_redacted_for_logs():
    s = Settings.from_env(environ={"COSMIC_RABBITMQ_URL": "amqp://svc:s3cret@rabbit:5672/prod"})
    assert "s3cret" not in s.rabbitmq_url_redacted
    assert s.rabbitmq_url_redacted == "amqp://svc:***@rabbit:5672/prod"
    assert redact_url("http://registry:8081") == "http://registry:8081"


def test_fail_over_settings_reach_the_faust_app():
    from app.worker.main import create_app

    s = Settings.from_env(environ={"COSMIC_TABLE_STANDBY_REPLICAS": "2",
                                   "COSMIC_BROKER_SESSION_TIMEOUT_SECONDS": "12", "COSMIC_STORE": "memory://"})
    app = create_app(settings=s)
    assert app.conf.table_standby_replicas == 2
    assert app.conf.broker_session_timeout == 12.0
    assert app.conf.broker_heartbeat_interval == pytest.approx(1.2)


@pytest.mark.parametrize("name, value", [("COSMIC_TABLE_STANDBY_REPLICAS", "-1"),
                                         ("COSMIC_BROKER_SESSION_TIMEOUT_SECONDS", "2"),
                                         ("COSMIC_GATHER_TIMEOUT_SECONDS", "0"),
                                         ("COSMIC_GATHER_TIMEOUT_SECONDS", "301")])
def test_fail_over_settings_out_of_range_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(environ={name: value})


def test_the_web_server_binds_where_configured_and_advertises_its_own_host():
    from app.worker.main import create_app

    app = create_app(settings=Settings.from_env(environ={
        "COSMIC_WEB_HOST": "0.0.0.0", "COSMIC_WEB_ADVERTISED_HOST": "worker-2", "COSMIC_WEB_PORT": "7000",
        "COSMIC_STORE": "memory://"}))
    assert app.conf.web_bind == "0.0.0.0"
    assert str(app.conf.canonical_url) == "http://worker-2:7000"  # where other workers forward reads
    local = create_app(settings=Settings.from_env(environ={"COSMIC_STORE": "memory://"}))
    assert local.conf.web_bind == "127.0.0.1" and str(local.conf.canonical_url) == "http://127.0.0.1:6066"


@pytest.mark.parametrize("value", ["http://worker-2", "worker-2:7000", "a b", "user@host"])
def test_an_advertised_host_that_is_not_a_host_is_refused(value):
    with pytest.raises(ConfigError, match="COSMIC_WEB_ADVERTISED_HOST"):
        Settings.from_env(environ={"COSMIC_WEB_ADVERTISED_HOST": value})


def test_a_record_is_late_only_beyond_lateness_plus_skew_behind_its_partitions_newest():
    from app.worker.streams import late_by

    slack_ms = int((Settings().max_event_lateness + Settings().max_clock_skew) * 1000)  # 3,900 s
    newest = 10_000_000_000
    assert late_by(timestamp_ms=newest - slack_ms, mark=newest) is None  # at the bound: accepted
    assert late_by(timestamp_ms=newest - slack_ms - 1, mark=newest) == 1
    assert late_by(timestamp_ms=newest + 5, mark=newest) is None
    assert late_by(timestamp_ms=None, mark=newest) is None and late_by(timestamp_ms=1, mark=None) is None


@pytest.mark.parametrize(("name", "value"), [("COSMIC_MAX_EVENT_LATENESS", "0"), ("COSMIC_MAX_EVENT_LATENESS", "700000"),
                                             ("COSMIC_MAX_CLOCK_SKEW", "-1"), ("COSMIC_MAX_CLOCK_SKEW", "3601")])
def test_event_time_bounds_out_of_range_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(environ={name: value})



@pytest.mark.parametrize(("name", "value"), [("COSMIC_BATCH_MAX_EVENTS", "0"), ("COSMIC_BATCH_MAX_WAIT_MS", "0"),
                                             ("COSMIC_BACKGROUND_BATCH_MAX_WAIT_MS", "0"),
                                             ("COSMIC_BACKGROUND_BATCH_MAX_WAIT_MS", "-5")])
def test_batch_sizes_and_waits_out_of_range_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(environ={name: value})


async def test_the_background_agents_wait_their_own_batch_wait(monkeypatch):
    """The audit, notification and health agents hand their batches over on their own wait;
    the lifecycle agent on the main one."""
    import agents.audit
    import agents.job_lifecycle
    import agents.notifications
    import agents.system_health
    import app.worker.streams as streams

    waits: list[float] = []

    async def take_batches(stream, *, max_events, within):  # noqa: ANN001, ANN202
        waits.append(within)
        return
        yield

    monkeypatch.setattr(streams, "take_batches", take_batches)
    main, background = streams.settings.batch_max_wait_ms / 1000, streams.settings.background_batch_max_wait_ms / 1000
    assert main != background  # the defaults (20 and 250 ms) unless the environment says otherwise
    for agent in (agents.audit.record_audit_trail, agents.notifications.deliver_notifications,
                  agents.system_health.watch_system_health, agents.job_lifecycle.track_job_lifecycle):
        async for _ in agent.fun(object()):
            pass
    assert waits == [background, background, background, main]
    assert Settings.from_env(environ={}).background_batch_max_wait_ms == 250.0
