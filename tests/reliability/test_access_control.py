"""Access control against one real worker (module-scoped, RabbitMQ bridge on), swept systematically.

* Every route of the app — the live ``/api/openapi.json`` and the routes on the app's aiohttp
  router — answers 401 without a token, with a forged, expired, wrong-audience, ``alg=none``,
  claim-less or otherwise broken token, and with a valid token in the query string; only the
  explicit public allow-list below is served without one (each entry says why). With an
  operator token every route works (so the 401s are not an artifact of bad paths).
* A plain user's token gets 403 on the operator routes (stats with the DLQ sizes, tables,
  audit) and on other users' notifications and preferences; other users' jobs look unknown
  (404), their events are not replayed, their job lists are refused.
* Faust's built-in ``/table/``, ``/router/``, ``/graph/``, stats and performance views are not served.
* Websocket: the same bad tokens are refused in the upgrade (401) and in the auth frame (error
  ``not_authenticated`` + 4001); query-string tokens are refused (401); cross-origin upgrades
  are refused (403); a user subscribing to another user's job or notifications (also with
  ``resume``, also after reconnecting) is refused and receives none of their events.
* At the end, neither the worker's log nor this process's log records contain the JWT secret,
  any token minted here, or the RabbitMQ password.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import aiohttp
import pytest
from access_support import WsClient, example, http, http_settled
from support.polling import wait_until

from app.web.openapi import documented_operations, router_operations

#: RabbitMQ bridge stays on (the default): its URL, with the stack's password, is in play for the
#: log check. Short auth timeout; one foreign origin allowed.
LIVE_WORKER_ENV = {
    "COSMIC_WS_AUTH_TIMEOUT_SECONDS": "5",
    "COSMIC_WS_ALLOWED_ORIGINS": "http://dashboard.example",
}

#: Routes served without a token, and why that is safe.
PUBLIC = {
    ("/", "GET"): "the dashboard page: static HTML without data (the operator JWT stays in the URL fragment)",
    ("/static/{name}", "GET"): "the dashboard's script and stylesheet: static files",
    ("/health", "GET"): "liveness for orchestrators: the worker's own state only",
    ("/ready", "GET"): "readiness for load balancers: which dependencies answer (URLs without passwords)",
    ("/metrics", "GET"): "Prometheus scraping: counters labelled by topic, agent and reason only; no ids, no events",
    ("/api/openapi.json", "GET"): "the description of the API; no data",
    ("/ws", "GET"): "the websocket upgrade: the token comes in the upgrade or the first frame (tested below)",
}
#: Faust's own views, switched off in app/worker/main.py (they would show tables without auth).
FAUST_VIEWS = ("/table/", "/table/job_state/", "/table/job_state/{job}/", "/router/", "/router/topics",
               "/router/job_state/", "/router/job_state/{job}/", "/graph/", "/assignment/", "/performance/")


@pytest.fixture(scope="module")
def people(live_worker):  # noqa: ANN001, ANN201
    """Alice's and Bob's jobs, applied to job_state (and their owners known to the feed)."""
    live = live_worker
    jobs = {"alice": f"job-alice-{live.uid}", "bob": f"job-bob-{live.uid}"}
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    events = [{**example("JobSubmitted", envelope=False), "job_id": job, "user_id": user,
               "timestamp": (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
              for i, (user, job) in enumerate(jobs.items())]
    status, _, raw = http(live.base_url, "POST", "/api/events", body=json.dumps(events).encode(),
                          token=live.publisher())
    assert status == 202, raw
    operator = live.operator()
    for job in jobs.values():
        _wait_status(live, f"/api/jobs/{job}", 200, token=operator)
    return jobs


def _wait_status(live, path: str, expected: int, *, token: str, deadline_s: float = 120.0) -> None:  # noqa: ANN001
    wait_until(lambda: http(live.base_url, "GET", path, token=token), timeout=deadline_s, what=f"{path}: {expected}",
               accept=lambda answer: answer[0] == expected,
               describe=lambda answer: f"{path}: {answer[0]} {answer[2][:300]!r}", diagnostics=live.process.log_tail)


def _routes(live) -> tuple[set[tuple[str, str]], dict]:  # noqa: ANN001
    """Every (path, METHOD): documented by the live worker, or on the app's router."""
    from app.worker.main import app

    status, doc = live.process.get_json("/api/openapi.json")
    assert status == 200
    app.discover()  # the view modules a worker imports
    app.web.init_server()
    return documented_operations(doc) | router_operations(app.web.web_app.router.routes()), doc


def _concrete(path: str, *, job: str, user: str) -> str:
    window = "topic=job-lifecycle&start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z"
    values = {"job_id": job, "user_id": user, "key": job, "resource_id": job, "actor": user}
    out = path
    for name, value in values.items():
        out = out.replace("{" + name + "}", quote(value, safe=""))
    out = out.replace("/api/tables/{name}", "/api/tables/job_state").replace("{name}", "dashboard.js")
    if out == "/api/events/replay":
        out += "?" + window
    return out


def _body(method: str, path: str) -> bytes | None:
    if method in ("PUT", "POST"):
        return json.dumps({"channels": ["WEBSOCKET"]}).encode() if "preferences" in path else b"{}"
    return None


def test_every_route_refuses_missing_and_bad_tokens_except_the_public_ones(live_worker, people) -> None:  # noqa: ANN001
    live = live_worker
    routes, doc = _routes(live)
    assert set(PUBLIC) <= routes, f"the allow-list names routes that do not exist: {set(PUBLIC) - routes}"
    protected = sorted(routes - set(PUBLIC))
    assert {p for p, _ in protected} >= {  # a sample of every family: the sweep is not empty
        "/api/jobs/{job_id}", "/api/events/replay", "/api/stats", "/api/tables/{name}", "/api/audit/actors/{actor}",
        "/api/users/{user_id}/notification-preferences", "/api/metrics/cluster"}, protected
    bad = live.bad_tokens(sub="alice")
    valid = live.token("alice")
    operator = live.operator()
    problems = []
    for path, method in protected:
        url = _concrete(path, job=people["alice"], user="alice")
        body = _body(method, path)
        sep = "&" if "?" in url else "?"
        attempts: dict[str, dict] = {
            "no token": {},
            "Basic auth": {"headers": {"Authorization": "Basic YWxpY2U6c2VjcmV0"}},
            "empty bearer": {"headers": {"Authorization": "Bearer "}},
            **{name: {"token": token} for name, token in bad.items()},
        }
        for name, kwargs in attempts.items():
            status, _, raw = http_settled(live.base_url, method, url, body=body, **kwargs)
            if status != 401:
                problems.append(f"{method} {url} with {name}: {status} {raw[:200]!r}")
        for param in ("token", "access_token", "jwt"):  # valid, but in the query string
            for extra in ({}, {"token": valid}):
                status, _, raw = http_settled(live.base_url, method, f"{url}{sep}{param}={valid}", body=body, **extra)
                if status != 401:
                    problems.append(f"{method} {url} with ?{param}= ({'and' if extra else 'no'} header): {status}")
        status, _, raw = http_settled(live.base_url, method, url, body=body, token=operator)
        if status in (401, 403) or status >= 500:
            problems.append(f"{method} {url} refused an operator: {status} {raw[:200]!r}")
        auth = doc["paths"].get(path, {}).get(method.lower(), {}).get("x-auth")
        if auth == "none":
            problems.append(f"{method} {path} needs a token but is documented as x-auth none")
    assert problems == [], "\n".join(problems)


def test_public_routes_answer_without_a_token_and_show_no_table_contents(live_worker, people) -> None:  # noqa: ANN001
    live = live_worker
    for (path, method), why in PUBLIC.items():
        url = _concrete(path, job=people["alice"], user="alice")
        status, _, raw = http(live.base_url, method, url, body=b"{}" if method == "POST" else None)
        assert status != 401 and (status < 500 or path == "/ready"), (path, status, why)
        for secret in (*people.values(), live.settings.jwt_secret):
            assert secret.encode() not in raw, f"{method} {path} shows {secret!r} without a token"


def test_a_plain_user_is_refused_operator_routes_and_other_users_data(live_worker, people) -> None:  # noqa: ANN001
    live = live_worker
    routes, doc = _routes(live)
    bob = live.token("bob")
    alice_job, bob_job = people["alice"], people["bob"]
    operator_only = sorted((p, m) for (p, m) in routes if doc["paths"].get(p, {}).get(m.lower(), {}).get("x-auth")
                           == "operator")
    assert {"/api/stats", "/api/tables", "/api/tables/{name}", "/api/tables/{name}/keys/{key}",
            "/api/audit/resources/{resource_id}", "/api/audit/actors/{actor}"} <= {p for p, _ in operator_only}
    for path, method in operator_only:
        url = _concrete(path, job=alice_job, user="alice")
        status, _, raw = http_settled(live.base_url, method, url, token=bob, body=_body(method, path))
        assert status == 403, (method, url, status, raw[:200])

    def status_of(method: str, path: str, **kwargs) -> tuple[int, bytes]:  # noqa: ANN003
        status, _, raw = http_settled(live.base_url, method, path, token=bob, **kwargs)
        return status, raw

    # a plain user cannot publish: not a cancellation of alice's job, not an event of bob's own
    forged = [{**example("JobCancelled", envelope=False), "job_id": job, "user_id": user, "cancelled_by": "bob"}
              for user, job in (("alice", alice_job), ("bob", bob_job))]
    for event in forged:
        status, raw = status_of("POST", "/api/events", body=json.dumps(event).encode())
        assert status == 403 and b"publisher" in raw, (status, raw[:200])

    # other users' jobs look unknown; their lists are refused; bob's own are served
    assert status_of("GET", f"/api/jobs/{alice_job}")[0] == 404
    assert status_of("GET", f"/api/jobs/{alice_job}/events")[0] == 404
    assert status_of("GET", "/api/jobs?user_id=alice")[0] == 403
    status, raw = status_of("GET", "/api/jobs")
    assert status == 200 and bob_job.encode() in raw and alice_job.encode() not in raw
    status, raw = status_of("GET", f"/api/jobs/{bob_job}")
    assert status == 200 and json.loads(raw)["status"] != "CANCELLED", raw[:300]
    assert status_of("GET", f"/api/metrics/jobs/{alice_job}")[0] in (403, 404)
    # other users' notifications and preferences: 403 for every method
    prefs = "/api/users/alice/notification-preferences"
    assert status_of("GET", prefs)[0] == 403
    assert status_of("PUT", prefs, body=json.dumps({"channels": ["WEBHOOK"],
                                                     "webhook_url": "http://evil.example/"}).encode())[0] == 403
    assert status_of("DELETE", prefs)[0] == 403
    assert status_of("GET", "/api/users/alice/notifications")[0] == 403
    assert status_of("GET", "/api/users/bob/notifications")[0] == 200
    # replay: another user's events refused; an unfiltered replay holds only bob's
    window = "topic=job-lifecycle&start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z"
    assert status_of("GET", f"/api/events/replay?{window}&user_id=alice")[0] == 403
    assert status_of("GET", f"/api/events/replay?{window}&job_id={alice_job}&user_id=alice")[0] == 403
    status, raw = status_of("GET", f"/api/events/replay?{window}")
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    events = [line["event"] for line in lines if line["type"] == "event"]
    assert status == 200 and lines[-1]["type"] == "end"
    assert [e["job_id"] for e in events] == [bob_job] and {e["user_id"] for e in events} == {"bob"}


def test_faust_builtin_views_are_not_served(live_worker, people) -> None:  # noqa: ANN001
    live = live_worker
    operator = live.operator()
    for template in FAUST_VIEWS:
        path = template.replace("{job}", people["alice"])
        for token in (None, operator):
            status, _, raw = http(live.base_url, "GET", path, token=token)
            assert status == 404, (path, status, raw[:200])
            assert people["alice"].encode() not in raw


async def _refused_upgrade(session: aiohttp.ClientSession, url: str, **kwargs) -> int:  # noqa: ANN003
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(url, **kwargs)
    return info.value.status


async def test_websocket_refuses_bad_tokens_query_tokens_and_foreign_origins(live_worker, people) -> None:  # noqa: ANN001
    live = live_worker
    bad = live.bad_tokens(sub="alice")
    valid = live.token("alice")
    async with aiohttp.ClientSession() as session:
        for name, token in bad.items():
            status = await _refused_upgrade(session, live.ws_url, headers={"Authorization": f"Bearer {token}"})
            assert status == 401, (name, status)
            client = await WsClient.connect(session, live.ws_url, auth_frame=token)
            assert await client.closed_with() == 4001, name
            assert client.frames and client.frames[-1]["code"] == "not_authenticated", (name, client.frames)
            assert not any(f.get("type") == "welcome" for f in client.frames), name
        for header in ("Basic YWxpY2U6c2VjcmV0", "Bearer", f"Token {valid}"):
            assert await _refused_upgrade(session, live.ws_url, headers={"Authorization": header}) == 401, header
        for param in ("token", "access_token", "jwt"):
            assert await _refused_upgrade(session, f"{live.ws_url}?{param}={valid}") == 401
            assert await _refused_upgrade(session, f"{live.ws_url}?{param}={valid}",
                                          headers={"Authorization": f"Bearer {valid}"}) == 401
        host = live.base_url.split("//", 1)[1]
        port = int(host.rsplit(":", 1)[1])
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"https://evil.example/{host}",
                       f"http://{host}.evil.example", "file://", "http://dashboard.example.evil.example"):
            status = await _refused_upgrade(session, live.ws_url, headers={"Origin": origin,
                                                                           "Authorization": f"Bearer {valid}"})
            assert status == 403, (origin, status)
        for origin in ("http://dashboard.example", live.base_url):
            client = await WsClient.connect(session, live.ws_url, bearer=valid, headers={"Origin": origin})
            assert (await client.welcome())["user_id"] == "alice"
            await client.close()


async def test_websocket_users_cannot_subscribe_to_others_channels_even_after_reconnecting(  # noqa: ANN001
        live_worker, people) -> None:
    live = live_worker
    bob_token = live.token("bob")
    alice_job, bob_job = people["alice"], people["bob"]
    lifecycle = live.topic("job-lifecycle")
    foreign = [f"job:{alice_job}:status", f"job:{alice_job}:metrics", "user:alice:notifications", "jobs:all"]
    resume = {f"job:{alice_job}:status": [{"topic": lifecycle, "partition": p, "offset": -1} for p in range(2)],
              f"job:{alice_job}:metrics": [{"topic": live.topic("job-metrics"), "partition": 0, "offset": -1}],
              "user:alice:notifications": [{"topic": live.topic("notifications"), "partition": 0, "offset": -1}],
              "jobs:all": [{"topic": lifecycle, "partition": 0, "offset": -1}]}
    async with aiohttp.ClientSession() as session:
        for attempt, connect in enumerate(({"bearer": bob_token}, {"auth_frame": bob_token},
                                           {"bearer": live.token("bob")})):
            bob = await WsClient.connect(session, live.ws_url, **connect)
            assert (await bob.welcome())["user_id"] == "bob"
            for channel in foreign:
                for with_resume in (None, resume[channel]):
                    answer = await bob.subscribe(channel, resume=with_resume)
                    assert answer == {"type": "error", "code": "forbidden", "channel": channel,
                                      "message": answer.get("message")}, (attempt, channel, answer)
            own = await bob.subscribe(f"job:{bob_job}:status", resume=[{"topic": lifecycle, "partition": p,
                                                                         "offset": -1} for p in range(10)])
            assert own["type"] == "subscribed", own
            await bob.wait_for(lambda f: f.get("type") == "recovered", what="bob's own recovery")
            await bob.ping()
            seen = [f for f in bob.frames if f.get("type") == "event"]
            assert seen and all(f["event"]["user_id"] == "bob" for f in seen), seen
            assert not any(alice_job in json.dumps(f) and f.get("type") != "error" for f in bob.frames)
            await bob.close()


def test_no_secret_or_token_appears_in_the_logs(live_worker, capfd) -> None:  # noqa: ANN001
    """Last of the module: the worker's log and this process's log records, grepped."""
    live = live_worker
    # one more kind of use: a token that is valid, sent where it is refused (query string)
    token = live.token(f"late-{uuid.uuid4().hex[:6]}")
    http(live.base_url, "GET", f"/api/jobs?token={token}")
    captured = capfd.readouterr()
    log = live.log_path.read_text(errors="replace")
    assert log.strip(), "the worker log is empty: nothing was checked"
    leaks = live.leaks(extra_texts=[("captured output", captured.out + captured.err)])
    assert leaks == [], leaks
