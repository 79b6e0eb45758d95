"""``cosmic``: the command line of the service (local stack, worker, topics, tables, demo)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.error
import urllib.request

import click

from app.core.errors import CosmicError
from app.core.settings import Settings
from app.core.topic_specs import JOB_LIFECYCLE


def _settings() -> Settings:
    return Settings.from_env()


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


MODE = click.option(
    "--mode", type=click.Choice(["auto", "online", "offline"]), default="auto", show_default=True,
    help="online: the running worker's API; offline: its data dir, read-only; auto: online if a worker answers.",
)


@click.group(help="Cosmic Horizons events: local stack, worker, topics and tables.")
def main() -> None:
    pass


# -- stack ---------------------------------------------------------------------------------
@main.group(help="The local stack: Kafka (KRaft), RabbitMQ and the schema registry, no Docker.")
def stack() -> None:
    pass


@stack.command("up", help="Start what is not running (idempotent).")
@click.option("--brokers", type=click.Choice(["1", "3"]), default=None,
              help="Kafka brokers (default: the running cluster's size, else 1).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per component.")
def stack_up(brokers: str | None, timeout: float) -> None:
    from app.ops.stack.manager import StackManager

    try:
        manager = StackManager(settings=_settings(), echo=click.echo)
        manager.up(brokers=int(brokers) if brokers else None, timeout=timeout)
        for status in manager.status():
            click.echo(status.line())
    except CosmicError as exc:
        _fail(exc)


@stack.command("down", help="Stop every process the stack started (data is kept).")
def stack_down() -> None:
    from app.ops.stack.manager import StackManager

    try:
        StackManager(settings=_settings(), echo=click.echo).down()
    except CosmicError as exc:
        _fail(exc)


@stack.command("status", help="Each component's version, address, health and log; exit 1 if any is down.")
def stack_status() -> None:
    from app.ops.stack.manager import StackManager

    try:
        statuses = StackManager(settings=_settings(), echo=click.echo).status()
    except CosmicError as exc:
        _fail(exc)
        return
    for status in statuses:
        click.echo(status.line())
    sys.exit(0 if all(s.healthy for s in statuses) else 1)


# -- topics --------------------------------------------------------------------------------
@main.group(help="Topics as code (app/core/topic_specs.py).")
def topics() -> None:
    pass


@topics.command("ensure", help="Create missing topics; report drift; never delete or truncate.")
def topics_ensure() -> None:
    from app.ops.topic_admin import ensure_topics

    settings = _settings()
    try:
        reports = asyncio.run(
            ensure_topics(
                bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                prefix=settings.topic_prefix,
            )
        )
    except CosmicError as exc:
        _fail(exc)
        return
    for report in reports:
        click.echo(report.line())
    created = sum(r.created for r in reports)
    drifted = sum(bool(r.drift) for r in reports)
    click.echo(f"{created} created, {drifted} with drift, {len(reports) - created - drifted} unchanged")
    if created == 0 and drifted == 0:
        click.echo("nothing to change")
    sys.exit(1 if drifted else 0)


@topics.command("describe", help="The live partitions, replication and configs of every spec'd topic.")
def topics_describe() -> None:
    from app.ops.topic_admin import describe_live

    settings = _settings()
    try:
        reports = asyncio.run(describe_live(bootstrap=settings.kafka_bootstrap, prefix=settings.topic_prefix))
    except CosmicError as exc:
        _fail(exc)
        return
    for report in reports:
        configs = ", ".join(f"{k}={report.configs[k]}" for k in ("retention.ms", "cleanup.policy") if k in report.configs)
        click.echo(f"{report.line()}  {configs}")


# -- worker --------------------------------------------------------------------------------
@main.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    help="Run a Faust worker (extra arguments go to `faust worker`).",
)
@click.pass_context
def worker(ctx: click.Context) -> None:
    from app.ops.topic_admin import ensure_changelog_topics, ensure_topics

    settings = _settings()
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    from app.worker.main import app, codecs

    app.finalize()
    app.discover()  # every table declared, so their changelog topics exist before the group joins

    async def ensure_all() -> None:
        # Both at once: a new topic takes about a second before the broker serves it, and the
        # two waits overlap (each returns once its topics are served: app.ops.topic_admin).
        await asyncio.gather(
            ensure_topics(bootstrap=settings.kafka_bootstrap, replication_factor=settings.replication_factor,
                          prefix=settings.topic_prefix),
            ensure_changelog_topics(app=app, bootstrap=settings.kafka_bootstrap),
        )

    try:
        asyncio.run(ensure_all())
    except CosmicError as exc:
        _fail(exc)
    _warm_up_codecs(codecs=codecs, registry_url=settings.schema_registry_url)

    from app.worker.faust_internals import already_declared, check_versions

    already_declared({table.changelog_topic.get_topic_name() for table in app.tables.values()})

    try:
        check_versions()  # every pinned distribution, from its installed metadata
    except CosmicError as exc:
        _fail(exc)
    if settings.uvloop:
        from app.worker.faust_internals import use_uvloop

        use_uvloop()
    sys.argv = ["cosmic", "worker", "--loglevel", settings.log_level, *ctx.args]
    app.main()


def _warm_up_codecs(*, codecs, registry_url: str, timeout: float = 60.0) -> None:  # noqa: ANN001
    """Register/look up every topic's schema before the worker starts (waits for the registry)."""
    from app.core.errors import EventEncodeError, SchemaNotRegisteredError

    deadline = time.monotonic() + timeout
    while True:
        try:
            ids = codecs.warm_up()
        except SchemaNotRegisteredError as exc:
            _fail(exc)
        except EventEncodeError as exc:
            if time.monotonic() > deadline:
                _fail(exc)
            click.echo(f"waiting for the schema registry at {registry_url}: {exc}", err=True)
            time.sleep(2)
            continue
        click.echo("schemas: " + ", ".join(f"{t}-value={i}" for t, i in ids.items()))
        return


# -- tables --------------------------------------------------------------------------------
@main.command("tables", help="The app's tables: name, changelog topic, partitions, keys.")
@MODE
def tables(mode: str) -> None:
    import json

    settings = _settings()
    answer = _online(settings, "/api/tables", mode)
    if answer is not None and answer[0] == 200:
        for row in json.loads(answer[1])["tables"]:
            click.echo(f"{row['name']:<24} changelog={row['changelog']:<48} partitions={row['partitions']}  "
                       f"keys={row['keys']}  (worker)")
        return
    from app.worker.main import app
    from app.ops.table_store import count_keys

    app.discover()
    for name, table in sorted(app.tables.items()):
        keys = count_keys(settings=settings, table=name)
        click.echo(
            f"{name:<24} changelog={table.changelog_topic.get_topic_name():<48} "
            f"partitions={table.partitions}  keys={'-' if keys is None else keys}  (disk)"
        )


# -- send ---------------------------------------------------------------------------------
@main.command("send", help="Validate and publish JSON event(s): an argument, --file, or stdin. "
                            "Straight to Kafka, or with --url through a worker's POST /api/events.")
@click.argument("event_json", required=False)
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False), help="A file with one event or an array.")
@click.option("--url", default=None, metavar="URL",
              help="A worker's base URL (e.g. http://127.0.0.1:6066): publish through its POST /api/events.")
@click.option("--token-env", default="COSMIC_TOKEN", show_default=True,
              help="With --url: the environment variable holding a publisher's JWT "
                   "(else one is minted from COSMIC_JWT_SECRET).")
def send(event_json: str | None, path: str | None, url: str | None, token_env: str) -> None:
    import json

    from app.core.errors import EventValidationError
    from app.worker.publisher import EventPublisher

    if path:
        with open(path, encoding="utf-8") as handle:
            raw = handle.read()
    elif event_json and event_json != "-":
        raw = event_json
    else:
        raw = sys.stdin.read()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        click.echo(json.dumps({"error": "malformed JSON", "field": "", "reason": str(exc)}), err=True)
        sys.exit(2)
    if url:
        _send_http(url=url, token_env=token_env, body=json.dumps(data).encode())
        return

    async def publish() -> list[str]:
        async with EventPublisher(settings=_settings()) as publisher:
            return await publisher.publish_json(data)

    try:
        ids = asyncio.run(publish())
    except EventValidationError as exc:
        click.echo(json.dumps(exc.to_dict()), err=True)
        sys.exit(2)
    except CosmicError as exc:
        _fail(exc)
        return
    for event_id in ids:
        click.echo(event_id)


def _send_http(*, url: str, token_env: str, body: bytes) -> None:
    """POST ``body`` to ``url``'s /api/events with a publisher's token; print the event ids."""
    import json

    token = os.environ.get(token_env)
    settings = _settings()
    if not token and settings.jwt_secret:
        from app.core.auth import mint_token

        token = mint_token(settings=settings, sub="cosmic-send", role=settings.jwt_publisher_role, ttl_s=300)
    if not token:
        click.echo(f"error: no token: set {token_env} (a JWT with the {settings.jwt_publisher_role!r} role; "
                   "`cosmic token issue --role publisher` prints one) or COSMIC_JWT_SECRET", err=True)
        sys.exit(1)
    target = url.rstrip("/")
    if not target.endswith("/api/events"):
        target += "/api/events"
    request = urllib.request.Request(target, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        click.echo(f"error: POST {target} answered {exc.code}: {exc.read().decode(errors='replace')[:1000]}", err=True)
        sys.exit(2 if exc.code == 400 else 1)
    except OSError as exc:
        _fail(exc)
        return
    for event_id in answer.get("event_ids", []):
        click.echo(event_id)


# -- tokens --------------------------------------------------------------------------------
@main.group("token", help="JWTs for the HTTP API and the websocket feed.")
def token_group() -> None:
    pass


TOKEN_ROLES = ("publisher", "operator", "user")


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``12h`` or ``7d`` → seconds (positive)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:], None)
    number = value[:-1] if factor else value
    try:
        seconds = int(float(number) * (factor or 1))
    except ValueError:
        raise click.BadParameter(f"{text!r}: a duration such as 90s, 30m, 1h or 7d") from None
    if seconds <= 0:
        raise click.BadParameter(f"{text!r}: must be positive")
    return seconds


@token_group.command("issue", help="Print a token signed with COSMIC_JWT_SECRET.")
@click.option("--sub", required=True, help="The subject: the user (or service) id.")
@click.option("--role", type=click.Choice(TOKEN_ROLES), default="user", show_default=True,
              help="publisher: may POST /api/events; operator: everything; user: their own jobs.")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 30m, 1h, 7d.")
def token_issue(sub: str, role: str, ttl: str) -> None:
    from app.core.auth import AuthError, mint_token

    settings = _settings()
    claim = {"publisher": settings.jwt_publisher_role, "operator": settings.jwt_operator_role}.get(role)
    try:
        click.echo(mint_token(settings=settings, sub=sub, role=claim, ttl_s=parse_ttl(ttl)))
    except AuthError as exc:
        _fail(exc)


# -- table inspection ----------------------------------------------------------------------
def _operator_token(settings: Settings) -> str | None:
    token = os.environ.get("COSMIC_OPERATOR_TOKEN")
    if token:
        return token
    if settings.jwt_secret:
        from app.core.auth import mint_token

        return mint_token(settings=settings, sub="cosmic-cli", role=settings.jwt_operator_role, ttl_s=300)
    return None


def _worker_get(settings: Settings, path: str) -> tuple[int, bytes] | None:
    """GET the local worker's API as an operator; None when no worker answers."""
    request = urllib.request.Request(f"http://{settings.web_host}:{settings.web_port}{path}")
    token = _operator_token(settings)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None


def _online(settings: Settings, path: str, mode: str) -> tuple[int, bytes] | None:
    if mode == "offline":
        return None
    answer = _worker_get(settings, path)
    if answer is None and mode == "online":
        _fail(CosmicError(f"no worker answers on {settings.web_host}:{settings.web_port}"))
    if answer is not None and answer[0] in (401, 403):
        _fail(CosmicError(f"the worker refused: {answer[1].decode(errors='replace')} "
                          "(set COSMIC_OPERATOR_TOKEN, or COSMIC_JWT_SECRET to mint one)"))
    return answer


@main.group("table", help="Read one table: `get NAME KEY`, `dump NAME`.")
def table_group() -> None:
    pass


@table_group.command("get")
@click.argument("name")
@click.argument("key")
@MODE
def table_get(name: str, key: str, mode: str) -> None:
    import json
    from urllib.parse import quote

    from app.ops import table_store

    settings = _settings()
    answer = _online(settings, f"/api/tables/{quote(name)}/keys/{quote(key, safe='')}", mode)
    if answer is not None:
        status, body = answer
        click.echo(body.decode())
        sys.exit(0 if status == 200 else 1)
    try:
        value = table_store.get(settings=settings, table=name, key=key)
    except KeyError:
        click.echo(json.dumps({"error": "key not found", "table": name, "key": key}))
        sys.exit(1)
    except CosmicError as exc:
        _fail(exc)
        return
    click.echo(json.dumps({"key": key, "value": value}))


@table_group.command("dump")
@click.argument("name")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=int, default=None)
@MODE
def table_dump(name: str, prefix: str, limit: int | None, mode: str) -> None:
    import json
    from urllib.parse import quote, urlencode

    from app.ops import table_store

    settings = _settings()
    query = urlencode({"prefix": prefix, **({"limit": limit} if limit else {})})
    answer = _online(settings, f"/api/tables/{quote(name)}?{query}", mode)
    if answer is not None:
        status, body = answer
        click.echo(body.decode(), nl=False)
        sys.exit(0 if status == 200 else 1)
    try:
        for item in table_store.dump(settings=settings, table=name, prefix=prefix, limit=limit):
            click.echo(json.dumps(item))
    except CosmicError as exc:
        _fail(exc)


# -- dead letters --------------------------------------------------------------------------
@main.group("dlq", help="The Kafka dead-letter topics: list, show, redrive.")
def dlq_group() -> None:
    pass


@dlq_group.command("list", help="Every dead-letter topic with its record count by reason.")
def dlq_list() -> None:
    from app.ops.dlq import summary

    try:
        rows = asyncio.run(summary(settings=_settings()))
    except CosmicError as exc:
        _fail(exc)
        return
    for row in rows:
        reasons = ", ".join(f"{k}={v}" for k, v in row["by_reason"].items()) or "-"
        click.echo(f"{row['topic']:<28} {row['records']:>8}  {reasons}")


@dlq_group.command("show", help="Dead letters of TOPIC as JSON lines (decoded event when possible).")
@click.argument("topic")
@click.option("--reason", default=None)
@click.option("--limit", type=int, default=20, show_default=True)
def dlq_show(topic: str, reason: str | None, limit: int) -> None:
    import json

    from app.ops.dlq import show

    try:
        for entry in asyncio.run(show(settings=_settings(), topic=topic, reason=reason, limit=limit)):
            click.echo(json.dumps(entry))
    except CosmicError as exc:
        _fail(exc)


@dlq_group.command("redrive", help="Send dead letters of TOPIC back to their source topic (each once).")
@click.argument("topic")
@click.option("--reason", default=None, help="Only records dead-lettered for this reason.")
@click.option("--dry-run", is_flag=True)
def dlq_redrive(topic: str, reason: str | None, dry_run: bool) -> None:
    import json

    from app.ops.dlq import redrive

    try:
        click.echo(json.dumps(asyncio.run(redrive(settings=_settings(), topic=topic, reason=reason, dry_run=dry_run))))
    except CosmicError as exc:
        _fail(exc)


# -- rebuild -------------------------------------------------------------------------------
@main.command("rebuild", help="Recompute job state from job-lifecycle alone and report differences with the table.")
@click.option("--job", "job_id", default=None, help="Only this job.")
@MODE
def rebuild(job_id: str | None, mode: str) -> None:
    import json

    from app.ops import table_store
    from app.core.codecs import Codecs
    from app.ops.rebuild import differences, recompute
    from app.ops.topic_reader import read_topic

    settings = _settings()
    try:
        records = asyncio.run(read_topic(bootstrap=settings.kafka_bootstrap, topic=settings.topic_prefix + JOB_LIFECYCLE))
    except CosmicError as exc:
        _fail(exc)
        return
    expected = recompute(records=records, codecs=Codecs(settings=settings), max_retries=settings.max_job_retries,
                         job_id=job_id)
    answer = _online(settings, "/api/tables/job_state" + (f"?prefix={job_id}" if job_id else ""), mode)
    if answer is not None:
        if answer[0] != 200:
            _fail(CosmicError(f"worker answered {answer[0]}: {answer[1][:200]!r}"))
        items = [json.loads(line) for line in answer[1].decode().splitlines() if line]
    else:
        items = list(table_store.dump(settings=settings, table="job_state", prefix=job_id or ""))
    actual = {item["key"]: item["value"] for item in items if job_id is None or item["key"] == job_id}
    diffs = differences(expected=expected, actual=actual)
    for diff in diffs:
        click.echo(json.dumps(diff))
    click.echo(f"rebuild: {len(expected)} jobs recomputed from {len(records)} records, {len(diffs)} differences")
    sys.exit(1 if diffs else 0)


# -- demo / run ----------------------------------------------------------------------------
@main.command("demo", help="Publish demo job lifecycles to job-lifecycle.")
@click.option("--jobs", type=int, default=None, help="How many jobs (default: until interrupted).")
@click.option("--interval", type=float, default=0.5, show_default=True)
def demo(jobs: int | None, interval: float) -> None:
    from app.ops.demo import run_demo

    try:
        sent = asyncio.run(run_demo(settings=_settings(), jobs=jobs, interval=interval))
    except KeyboardInterrupt:
        return
    click.echo(f"demo: {sent} events published")


@main.command("run", help="The main job: stack up, topics, a worker and the demo source.")
@click.option("--jobs", type=int, default=None, help="Stop the demo after this many jobs.")
def run(jobs: int | None) -> None:
    import signal

    from app.ops.stack.manager import StackManager

    # SIGTERM (a service manager, `kill`) stops the main job as Ctrl-C does: the demo, then the worker.
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))

    if not os.environ.get("COSMIC_JWT_SECRET") and not os.environ.get("COSMIC_JWT_PUBLIC_KEY_FILE"):
        # A local demo: a random secret for this run only, so the dashboard and the job
        # queries work without configuration (set COSMIC_JWT_SECRET to keep tokens valid).
        import secrets

        os.environ["COSMIC_JWT_SECRET"] = secrets.token_urlsafe(32)
    settings = _settings()
    try:
        StackManager(settings=settings, echo=click.echo).up()
    except CosmicError as exc:
        _fail(exc)
    from app.ops.worker_process import WorkerProcess

    worker_proc = WorkerProcess(env=dict(os.environ))
    base = worker_proc.base_url
    try:
        worker_proc.start(timeout=180)
    except CosmicError as exc:
        _fail(exc)
    click.echo("")
    click.echo("Cosmic Horizons events is running:")
    click.echo(f"  worker web API       {base}/api/jobs/<job_id>")
    if settings.jwt_secret:
        from app.core.auth import mint_token

        token = mint_token(settings=settings, sub="cosmic-run", role=settings.jwt_operator_role, ttl_s=12 * 3600)
        click.echo(f"  live dashboard       {base}/#token={token}")
        publisher = mint_token(settings=settings, sub="cosmic-run", role=settings.jwt_publisher_role,
                               ttl_s=12 * 3600)
        click.echo(f"  publish events       POST {base}/api/events with `Authorization: Bearer <publisher token>`, "
                   f"or COSMIC_TOKEN=<publisher token> cosmic send --url {base} EVENT_JSON")
        click.echo(f"  publisher token      {publisher}")
    click.echo("  RabbitMQ management  http://127.0.0.1:15672/  (guest / guest)")
    click.echo(f"  Kafka bootstrap      {settings.kafka_bootstrap}")
    click.echo("Publishing demo events; Ctrl-C stops the demo and the worker (`cosmic stack down` stops the stack).")
    from app.ops.demo import run_demo

    published: list[str] = []
    ingest: dict[str, str] = {}
    if settings.jwt_secret:  # the demo publishes as the platform's API does: POST /api/events
        from app.core.auth import mint_token

        ingest = {"ingest_url": f"{base}/api/events",
                  "token": mint_token(settings=settings, sub="cosmic-demo", role=settings.jwt_publisher_role,
                                      ttl_s=12 * 3600)}
    try:
        asyncio.run(run_demo(settings=settings, jobs=jobs, interval=0.5, published=published, **ingest))
        if jobs is not None:
            _wait_for_jobs(base=base, job_ids=published, timeout=60)
    except KeyboardInterrupt:
        pass
    except CosmicError as exc:
        # Ctrl-C reaches the worker (same process group) as soon as the demo: a POST that
        # finds the worker gone or stopping is the end of the run, not a failure.
        code = worker_proc.proc.poll() if worker_proc.proc is not None else 1
        if code is None and not _worker_stopping(base) or code not in (None, 0):
            _fail(exc)
        click.echo("demo: the worker stopped; the demo ends with it")
    finally:
        worker_proc.stop(timeout=30)


def _worker_stopping(base: str) -> bool:
    """True when the worker's web server no longer answers (it is shutting down)."""
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2):
            return False
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True


def _wait_for_jobs(*, base: str, job_ids: list[str], timeout: float) -> None:
    """Wait until the worker applied the demo's jobs (each reached a final status)."""
    import json

    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"{base}/api/jobs/{pending[0]}")
            token = _operator_token(_settings())  # job queries need a JWT
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, timeout=5) as response:
                if json.loads(response.read()).get("status") in ("COMPLETED", "FAILED", "CANCELLED"):
                    click.echo(f"demo: job {pending.pop(0)} applied by the worker")
                    continue
        except OSError:
            pass
        time.sleep(0.5)


# -- replay --------------------------------------------------------------------------------
@main.command("replay", help="Events of TOPIC between --start and --end (ISO 8601), in timestamp order, "
                             "read from Kafka directly (JSON lines; the last line is the end or a cursor).")
@click.option("--topic", required=True, help="job-lifecycle, job-metrics, audit-trail, notifications, system-health")
@click.option("--start", required=True, help="ISO 8601 date-time, inclusive (e.g. 2024-05-01T12:00:00Z)")
@click.option("--end", required=True, help="ISO 8601 date-time, exclusive")
@click.option("--job-id", default=None, help="Only this job's events.")
@click.option("--event-type", default=None, help="Only this event type (e.g. JobCompleted).")
@click.option("--user-id", default=None, help="Only this user's events.")
@click.option("--limit", type=int, default=None, help="At most this many events; the last line carries a cursor.")
@click.option("--cursor", default=None, help="Resume from the cursor of a previous replay.")
@click.option("--json", "as_json", is_flag=True, help="Every line as JSON (default: events one per line, readable).")
def replay_command(topic: str, start: str, end: str, job_id: str | None, event_type: str | None,
                   user_id: str | None, limit: int | None, cursor: str | None, as_json: bool) -> None:
    from app.ops.replay import run_replay_cli

    settings = _settings()
    params = {"topic": topic, "start": start, "end": end, "job_id": job_id, "event_type": event_type,
              "user_id": user_id, "limit": None if limit is None else str(limit), "cursor": cursor}
    try:
        code = asyncio.run(run_replay_cli(settings=settings, params={k: v for k, v in params.items() if v is not None},
                                          as_json=as_json, echo=click.echo, echo_err=lambda m: click.echo(m, err=True)))
    except CosmicError as exc:
        _fail(exc)
        return
    sys.exit(code)


# -- websocket feed ------------------------------------------------------------------------
@main.command("watch", help="Subscribe to websocket CHANNELs (job:<id>:status, job:<id>:metrics, "
                            "user:<id>:notifications, system:alerts, jobs:all) and print one JSON line per event; "
                            "reconnects and resumes from the last positions when the connection drops.")
@click.argument("channels", nargs=-1, required=True)
@click.option("--url", default=None, help="Feed URL (default ws://COSMIC_WEB_HOST:COSMIC_WEB_PORT/ws).")
@click.option("--token-env", default="COSMIC_TOKEN", show_default=True,
              help="Environment variable holding the JWT (else an operator token from COSMIC_JWT_SECRET).")
@click.option("--count", type=int, default=None, help="Exit after this many events.")
def watch(channels: tuple[str, ...], url: str | None, token_env: str, count: int | None) -> None:
    settings = _settings()
    token = os.environ.get(token_env) or _operator_token(settings)
    if not token:
        click.echo(f"error: no token: set {token_env} (or COSMIC_JWT_SECRET to mint one)", err=True)
        sys.exit(2)
    url = url or f"ws://{settings.web_host}:{settings.web_port}/ws"
    sys.exit(asyncio.run(_watch(url=url, token=token, channels=list(dict.fromkeys(channels)), count=count)))


async def _watch(*, url: str, token: str, channels: list[str], count: int | None) -> int:
    """The ``cosmic watch`` loop (websockets client); returns the exit status."""
    import json

    import websockets

    positions: dict[str, dict[tuple[str, int], int]] = {c: {} for c in channels}
    printed, attempt = 0, 0
    refused: set[str] = set()
    while True:
        try:
            async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                          max_size=None, open_timeout=30) as ws:
                for channel in channels:
                    if channel in refused:
                        continue
                    frame: dict = {"type": "subscribe", "channel": channel}
                    if positions[channel]:
                        frame["resume"] = [{"topic": t, "partition": p, "offset": o}
                                           for (t, p), o in sorted(positions[channel].items())]
                    await ws.send(json.dumps(frame))
                async for raw in ws:
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "event":
                        pos = msg["position"]
                        positions.setdefault(msg["channel"], {})[(pos["topic"], pos["partition"])] = pos["offset"]
                        click.echo(json.dumps({k: v for k, v in msg.items() if k != "type"}, separators=(",", ":")))
                        printed += 1
                        if count is not None and printed >= count:
                            return 0
                    elif kind == "subscribed":
                        attempt = 0
                    elif kind == "error":
                        click.echo(f"refused: {msg.get('channel') or ''} {msg.get('code')}: {msg.get('message')}",
                                   err=True)
                        if msg.get("channel") in positions:
                            refused.add(msg["channel"])
                            if refused >= set(channels):
                                return 1
                    elif kind in ("not_recovered", "recovered"):
                        click.echo(json.dumps(msg, separators=(",", ":")), err=True)
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == 4001:
                click.echo(f"error: authentication refused: {exc.rcvd.reason}", err=True)
                return 2
            click.echo(f"connection closed ({code}); reconnecting", err=True)
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            click.echo(f"error: {url} answered HTTP {status}: {exc.response.body[:300]!r}", err=True)
            if status in (401, 403):
                return 2
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as exc:
            click.echo(f"cannot reach {url} ({exc!r}); retrying", err=True)
        attempt += 1
        await asyncio.sleep(min(2.0 ** attempt, 10.0) / 2)


from app.ops.cli_audit import audit as _audit  # noqa: E402 - registered after the group exists
from app.ops.cli_rabbit import rabbit as _rabbit  # noqa: E402

main.add_command(_audit)
main.add_command(_rabbit)

if __name__ == "__main__":
    main()
