"""The production deployment files, checked without a Docker engine (issue #10).

``compose/docker-compose.yml`` is parsed with PyYAML, interpolated with the placeholder values
of ``compose/.env.example`` the way Compose does, validated against the Compose Specification's
JSON schema (vendored as ``compose/compose-spec.schema.json``, origin in docs/operations.md),
and then checked against what the app reads (``Settings``), the topic spec, the local stack's
Kafka version, the RabbitMQ cluster config and the worker's Dockerfile.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from app.core.alert_rules import RULE_DLQ, RULE_DOWN, RULE_LAG, RULE_STALLED, Thresholds
from app.core.settings import PROJECT_ROOT, Settings
from app.core.topic_specs import all_topic_specs
from app.ops.stack.kafka import KAFKA_VERSION

COMPOSE_DIR = PROJECT_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA_FILE = COMPOSE_DIR / "compose-spec.schema.json"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
ENTRYPOINT_SCRIPT = COMPOSE_DIR / "worker-entrypoint.sh"
RABBITMQ_CONF = COMPOSE_DIR / "rabbitmq" / "rabbitmq.conf"
NGINX_CONF = COMPOSE_DIR / "nginx" / "cosmic.conf"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
OPERATIONS_DOC = PROJECT_ROOT / "docs" / "operations.md"

#: Settings left at their defaults in production (not set for the worker service), and why.
#: A new field of app/core/settings.py fails test_worker_sets_every_production_setting until it
#: is either set in compose/docker-compose.yml (x-cosmic-env) or listed here with a reason.
DEFAULT_IN_PRODUCTION: dict[str, str] = {
    "web_advertised_host": "set per replica by compose/worker-entrypoint.sh to the container's hostname: "
                           "Faust's canonical URL must be unique per worker and reachable by the others",
    "stack_home": "only `cosmic stack` (the local development stack) reads it",
    "topic_prefix": "tests isolate their topics with a uuid prefix; production topics have none",
    "jwt_public_key_file": "the RS256 alternative to COSMIC_JWT_SECRET: mount the key and set it "
                           "instead (docs/operations.md)",
}

#: Environment variable names whose values are secrets.
SECRET_NAME = re.compile(r"PASS|SECRET|COOKIE|TOKEN|PRIVATE|CREDENTIAL", re.IGNORECASE)
#: ``$$`` (a literal $), ``${NAME}``, ``${NAME:-default}``, ``${NAME?error}``…, ``$NAME``.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
PLACEHOLDER = "change-me"


# -- helpers -----------------------------------------------------------------------------
def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _references(text: str) -> list[tuple[str, str | None]]:
    """(variable, operator) of every interpolation in ``text``."""
    return [(m["braced"] or m["named"], m["op"]) for m in INTERPOLATION.finditer(text)
            if not m["escaped"]]


def _interpolate_text(text: str, env: dict[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["braced"] or m["named"], m["op"], m["arg"] or ""
        value = env.get(name)
        if op in (":?", "?"):
            assert value if op == ":?" else value is not None, f"${{{name}}} is required: {arg}"
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if op in (":+", "+"):
            return arg if (value if op == ":+" else value is not None) else ""
        return value or ""

    return INTERPOLATION.sub(replace, text)


def _interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate_text(node, env)
    if isinstance(node, dict):
        return {key: _interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(item, env) for item in node]
    return node


def _env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The compose file as written (``${VAR}`` references not yet replaced)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose sees it with compose/.env.example as the env file."""
    return _interpolate(raw, env_example)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _kafka(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}


def _rabbitmq(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("rabbitmq:")}


# -- the file as a whole -----------------------------------------------------------------
def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # The spec's constraint that its JSON schema leaves to the tools: an image or a build.
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, f"service {name} has neither image nor build"


def test_the_schema_check_catches_a_misspelt_key(compose):
    """The validation above is not vacuous: a typo'd service key is reported."""
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["helthcheck"] = broken["services"]["worker"].pop("healthcheck")
    messages = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages), messages


def test_every_service_has_a_healthcheck_or_is_a_one_shot_job(services):
    for name, service in services.items():
        if service.get("restart") == "no":
            # A job: those that need it wait for it to finish, not for it to be healthy.
            waits = [s["depends_on"][name]["condition"] for s in services.values()
                     if isinstance(s.get("depends_on"), dict) and name in s["depends_on"]]
            assert waits and set(waits) == {"service_completed_successfully"}, name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"service {name} has no healthcheck"
        test = check["test"]
        assert test and (isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL")), (name, test)
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"service {name}: healthcheck without {key}"


def test_every_image_is_pinned_by_version(services):
    images = {name: s["image"] for name, s in services.items() if "image" in s}
    assert set(images) == set(services), "every service names its image (built ones too: their tag)"
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    base = [args for word, args in _dockerfile_instructions(DOCKERFILE.read_text()) if word == "FROM"]
    assert base and all(re.search(r":\d+\.\d+\.\d+", image) for image in base), base


def test_kafka_image_is_the_version_the_local_stack_runs(services):
    assert {s["image"] for s in _kafka(services).values()} == {f"apache/kafka:{KAFKA_VERSION}"}


# -- secrets -----------------------------------------------------------------------------
def test_no_secret_is_written_in_the_compose_file(raw):
    for name, service in raw["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"(\$\{[^}]+\})+", value), f"{name}: {key} must be a ${{VAR}} from compose/.env"
            if "://" in value:
                password = urlsplit(value).password
                if password is not None:
                    assert re.fullmatch(r"\$\{[^}]+\}", password), f"{name}: {key} has a password written in"
    for text in _strings(raw):
        for variable, op in _references(text):
            if SECRET_NAME.search(variable):
                assert op in (None, ":?", "?"), f"${{{variable}}} must not have a default value"
    assert "guest:guest" not in COMPOSE_FILE.read_text()


def test_env_example_defines_every_variable_with_placeholders_only(raw, env_example):
    used = {variable for text in _strings(raw) for variable, _ in _references(text)}
    assert used == set(env_example), (
        f"used but not in .env.example: {sorted(used - set(env_example))}; "
        f"in .env.example but unused: {sorted(set(env_example) - used)}")
    for key, value in env_example.items():
        if SECRET_NAME.search(key):
            assert PLACEHOLDER in value, f".env.example: {key} must be a {PLACEHOLDER} placeholder"
        if "://" in value:
            assert urlsplit(value).password is None, f".env.example: {key} holds a password"


def test_real_values_stay_out_of_git_and_out_of_the_image():
    assert ".env" in COMPOSE_DIR.joinpath(".gitignore").read_text().split()
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    # Deny by default: only the paths re-included below reach the build, never .env, .git, .data.
    assert patterns[0] == "*"
    assert not any(".env" in p or p.lstrip("!").startswith((".git", ".data", ".venv"))
                   for p in patterns if p.startswith("!"))
    for path in [*COMPOSE_DIR.rglob("*"), DOCKERFILE]:
        if path.is_file() and path.name not in (".env", ".env.example", SCHEMA_FILE.name):
            for line in path.read_text().splitlines():
                if line.lstrip().startswith("#"):
                    continue
                # A secret-looking key followed by a value that is not a ${VAR} reference.
                found = re.search(r"(?i)(pass|passwd|password|secret|cookie)\s*[=:]\s*([^\s#]+)",
                                  INTERPOLATION.sub("", line))
                assert not found, f"{path.name}: {line.strip()}"


# -- the workers' settings ---------------------------------------------------------------
def test_worker_sets_every_production_setting(services):
    names = {f.name for f in fields(Settings)}
    assert set(DEFAULT_IN_PRODUCTION) <= names, "stale allow-list entry"
    env = _environment(services["worker"])
    cosmic = {key[len("COSMIC_"):].lower() for key in env if key.startswith("COSMIC_")}
    assert cosmic <= names, f"COSMIC_* variables that Settings does not read: {sorted(cosmic - names)}"
    missing = names - cosmic - set(DEFAULT_IN_PRODUCTION)
    assert not missing, (f"set {sorted('COSMIC_' + n.upper() for n in missing)} for the workers "
                         "(x-cosmic-env) or list them in DEFAULT_IN_PRODUCTION with a reason")
    assert not cosmic & set(DEFAULT_IN_PRODUCTION), "allow-listed but set"


def test_worker_settings_are_valid_and_fit_the_cluster(services):
    env = _environment(services["worker"])
    settings = Settings.from_env(environ=env)  # raises ConfigError on a malformed value
    kafka = _kafka(services)
    advertised = {urlsplit(_environment(s)["KAFKA_ADVERTISED_LISTENERS"]).netloc for s in kafka.values()}
    assert set(settings.kafka_bootstrap.split(",")) == advertised
    assert settings.replication_factor == len(kafka) == 3
    assert settings.rabbitmq_queue_type == "quorum"
    assert settings.table_standby_replicas >= 1
    assert settings.schema_auto_register is False
    assert settings.store.startswith("rocksdb://")
    registry = urlsplit(settings.schema_registry_url)
    assert registry.hostname == "schema-registry" and "schema-registry" in services
    listener = urlsplit(_environment(services["schema-registry"])["SCHEMA_REGISTRY_LISTENERS"])
    assert registry.port == listener.port
    # Secrets really come from the env file: the example's placeholders arrive in the settings.
    assert settings.jwt_secret.startswith(PLACEHOLDER)
    assert urlsplit(settings.rabbitmq_url).password.startswith(PLACEHOLDER)


def test_topics_job_creates_topics_and_registers_schemas_before_the_workers(services):
    job = services["topics"]
    script = " ".join(job["command"])
    assert "cosmic topics ensure" in script and "warm_up()" in script
    assert _environment(job)["COSMIC_SCHEMA_AUTO_REGISTER"] == "true"
    same = {k: v for k, v in _environment(job).items() if k != "COSMIC_SCHEMA_AUTO_REGISTER"}
    assert same == {k: v for k, v in _environment(services["worker"]).items() if k != "COSMIC_SCHEMA_AUTO_REGISTER"}
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert job["image"] == services["worker"]["image"]


def test_workers_scale_with_their_own_volumes_behind_the_proxy(services):
    worker = services["worker"]
    assert "container_name" not in worker and "hostname" not in worker
    assert not worker.get("ports"), "a fixed host port would stop `--scale worker=N`"
    settings = Settings.from_env(environ=_environment(worker))
    data = [v for v in worker["volumes"] if isinstance(v, dict) and v.get("target") == str(settings.data_dir)]
    assert data and data[0]["type"] == "volume" and "source" not in data[0], \
        "the data dir must be an anonymous volume: one per replica"
    for dependency in ("kafka-1", "kafka-2", "kafka-3", "schema-registry", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy", dependency
    # Partitions bound the parallelism: more replicas than the largest topic's partitions idle.
    assert 2 <= worker["deploy"]["replicas"] <= max(s.partitions for s in all_topic_specs())
    proxy = services["proxy"]
    assert proxy["ports"] and proxy["depends_on"]["worker"]
    nginx = NGINX_CONF.read_text()
    assert f"worker:{settings.web_port}" in nginx and "resolver 127.0.0.11" in nginx
    assert "Upgrade $http_upgrade" in nginx  # /ws goes through


# -- Kafka -------------------------------------------------------------------------------
def test_kraft_cluster_of_three_brokers(services):
    kafka = _kafka(services)
    assert len(kafka) == 3
    envs = {name: _environment(s) for name, s in kafka.items()}
    node_ids = {name: int(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert sorted(node_ids.values()) == [1, 2, 3]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1, "every broker must list the same controller quorum"
    controller_port = {urlsplit(l).port for l in envs["kafka-1"]["KAFKA_LISTENERS"].split(",")
                       if l.startswith("CONTROLLER://")}
    expected = {f"{node_ids[name]}@{kafka[name]['hostname']}:{port}" for name in kafka for port in controller_port}
    assert set(voters.pop().split(",")) == expected
    raw_ids = {yaml.safe_load(COMPOSE_FILE.read_text())["services"][n]["environment"]["CLUSTER_ID"] for n in kafka}
    assert len(raw_ids) == 1 and raw_ids.pop().startswith("${KAFKA_CLUSTER_ID")
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{kafka[name]['hostname']}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert any(str(v).endswith(":" + env["KAFKA_LOG_DIRS"]) for v in kafka[name]["volumes"])
    assert len({tuple(s["volumes"]) for s in kafka.values()}) == 3, "each broker has its own volume"


def test_every_topic_fits_the_broker_count(services):
    kafka = _kafka(services)
    brokers = len(kafka)
    env = _environment(services["worker"])
    replication = int(env["COSMIC_REPLICATION_FACTOR"])
    broker_min_isr = {int(_environment(s)["KAFKA_MIN_INSYNC_REPLICAS"]) for s in kafka.values()}.pop()
    assert replication == brokers
    for spec in all_topic_specs():
        min_isr = int(dict(spec.extra_configs).get("min.insync.replicas", broker_min_isr))
        assert spec.partitions >= 1, spec.name
        # Writes with acks=all survive one broker down: min ISR < RF <= brokers.
        assert 1 <= min_isr < replication <= brokers, spec.name
    registry = _environment(services["schema-registry"])
    assert int(registry["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"]) == brokers
    assert set(registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split(",")) == {
        f"PLAINTEXT://{a}" for a in env["COSMIC_KAFKA_BOOTSTRAP"].split(",")}


# -- RabbitMQ ----------------------------------------------------------------------------
def test_rabbitmq_cluster_of_three_nodes_with_one_cookie(raw, services):
    rabbit = _rabbitmq(services)
    assert len(rabbit) == 3
    assert all(s["image"].endswith("-management") for s in rabbit.values())
    cookies = {raw["services"][name]["environment"]["RABBITMQ_ERLANG_COOKIE"] for name in rabbit}
    assert len(cookies) == 1 and cookies.pop().startswith("${RABBITMQ_ERLANG_COOKIE")
    conf = _properties(RABBITMQ_CONF.read_text())
    assert conf["cluster_formation.peer_discovery_backend"] in ("classic_config", "rabbit_peer_discovery_classic_config")
    nodes = {value for key, value in conf.items() if key.startswith("cluster_formation.classic_config.nodes.")}
    assert nodes == {f"rabbit@{s['hostname']}" for s in rabbit.values()}
    for name, service in rabbit.items():
        mounts = [str(v) for v in service["volumes"]]
        assert any(m.startswith("./rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/") for m in mounts), name
        assert any(m.endswith(":/var/lib/rabbitmq") for m in mounts), name
    # The workers connect through an alias every node carries, so any live node serves them.
    host = urlsplit(_environment(services["worker"])["COSMIC_RABBITMQ_URL"]).hostname
    assert all(host in s["networks"]["default"]["aliases"] for s in rabbit.values())
    assert _environment(services["worker"])["COSMIC_RABBITMQ_QUEUE_TYPE"] == "quorum"


# -- the worker image --------------------------------------------------------------------
def test_dockerfile_runs_cosmic_worker_as_a_non_root_user():
    steps = _dockerfile_instructions(DOCKERFILE.read_text())
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    exposed = {port.split("/")[0] for word, args in steps if word == "EXPOSE" for port in args.split()}
    assert str(Settings().web_port) in exposed
    cmd = [json.loads(args) for word, args in steps if word == "CMD"]
    assert cmd[-1] == ["cosmic", "worker"]
    assert "cosmic worker" in (PROJECT_ROOT / "README.md").read_text()
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip install -c constraints.txt ." in runs
    env = {}
    for word, args in steps:
        if word == "ENV":
            env.update(dict(token.split("=", 1) for token in shlex.split(args)))
    # The schemas are read from <project root>/avro: the tree must be importable first.
    workdir = [args for word, args in steps if word == "WORKDIR"][-1]
    assert env["PYTHONPATH"] == workdir
    copied = {args.split()[-1].rstrip("/").replace("./", f"{workdir}/") for word, args in steps if word == "COPY"}
    assert f"{workdir}/avro" in copied and f"{workdir}/app" in copied
    assert str(Settings.from_env(environ={"COSMIC_DATA_DIR": env["COSMIC_DATA_DIR"]}).data_dir) == env["COSMIC_DATA_DIR"]


def test_every_dockerfile_copy_source_is_in_the_build_context():
    included = {line.strip()[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.strip().startswith("!")}
    for word, args in _dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "COPY" and not args.startswith("--from"):
            for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert source.rstrip("/") in included, f"{source} is not re-included in .dockerignore"
                assert (PROJECT_ROOT / source).exists(), source


def test_worker_listens_on_every_interface_and_advertises_its_own_container_address(services):
    """COSMIC_WEB_HOST (the bind address) is 0.0.0.0 as configured; the entry point sets
    COSMIC_WEB_ADVERTISED_HOST to the container's hostname (unique per replica) and leaves
    COSMIC_WEB_HOST alone."""
    assert _environment(services["worker"])["COSMIC_WEB_HOST"] == "0.0.0.0"
    steps = _dockerfile_instructions(DOCKERFILE.read_text())
    entry = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"][-1]
    installed = [args.split() for word, args in steps if word == "COPY" and "worker-entrypoint.sh" in args]
    assert installed and installed[0][-1].endswith("/" + entry[0])
    script = ENTRYPOINT_SCRIPT.read_text()
    assert script.startswith("#!/bin/sh")
    assert re.search(r'if \[ -z "\$\{COSMIC_WEB_ADVERTISED_HOST:-\}" \]; then\s+'
                     r'COSMIC_WEB_ADVERTISED_HOST="\$\(hostname\)"', script)
    assert not re.search(r"^\s*(export\s+)?COSMIC_WEB_HOST=", script, re.M), "the entry point overrides the bind address"
    assert script.rstrip().endswith('exec "$@"')
    assert ENTRYPOINT_SCRIPT.stat().st_mode & 0o111, "worker-entrypoint.sh must be executable"


def test_worker_port_is_the_same_everywhere(services):
    port = str(Settings().web_port)
    assert _environment(services["worker"])["COSMIC_WEB_PORT"] == port
    assert services["worker"]["expose"] == [port]
    assert f":{port}/ready" in " ".join(services["worker"]["healthcheck"]["test"])


# -- docs/operations.md ------------------------------------------------------------------
def test_operations_guide_names_every_alert_rule_and_threshold():
    doc = OPERATIONS_DOC.read_text()
    defaults = Thresholds()
    for rule in (RULE_LAG, RULE_STALLED, RULE_DLQ, RULE_DOWN):
        assert f"`{rule}`" in doc, rule
    for variable, value in (("COSMIC_ALERT_LAG_THRESHOLD", defaults.lag),
                            ("COSMIC_ALERT_STALL_SECONDS", defaults.stall_seconds),
                            ("COSMIC_ALERT_DLQ_GROWTH", defaults.dlq_growth)):
        assert variable in doc and f"{value:g}" in doc, variable
    assert "compose-spec/compose-spec" in doc and SCHEMA_FILE.name in doc
