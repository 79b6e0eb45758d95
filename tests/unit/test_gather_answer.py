"""The gather of ``app/web/gather.py`` with fake members (no broker): the parts of every member
are merged into one answer, a missing part is a 503 (or a flagged partial answer when asked for),
a part request is answered locally only, and access is checked before any fan-out."""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from faust.web import Request, Response, View
from yarl import URL

import app.web.gather as gather_module
import app.web.route as route_module
from app.core.auth import Principal, mint_token
from app.core.settings import Settings
from app.web.gather import PART_HEADER, Gather, PartUnavailable
from app.web.route import OPERATOR, USER, endpoint

SECRET = "gather-unit-secret-" + "x" * 32
SELF = "http://w0:6066"
MEMBERS = {SELF: frozenset({0, 1}), "http://w1:6066": frozenset({2, 3}), "http://w2:6066": frozenset({4, 5})}
#: The member a fake part request is being answered by (each fan-out task has its own context).
_MEMBER = contextvars.ContextVar("member", default=SELF)


@dataclass
class _Topic:
    name: str

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class _Table:
    name: str
    partitions: int
    changelog_topic: _Topic


TABLE = _Table(name="things", partitions=6, changelog_topic=_Topic("things-changelog"))


@pytest.fixture
def settings(monkeypatch) -> Settings:
    settings = Settings.from_env(environ={"COSMIC_JWT_SECRET": SECRET, "COSMIC_GATHER_TIMEOUT_SECONDS": "0.5"})
    monkeypatch.setattr(route_module, "settings", settings)
    monkeypatch.setattr(route_module, "worker_ready", lambda: (True, ""))
    return settings


@pytest.fixture
def group(monkeypatch) -> dict[str, Any]:
    """Three fake members; ``calls`` records each outbound part request, ``down`` the members
    that do not answer, ``moved`` members whose partitions are not what the assignment says."""
    state: dict[str, Any] = {"calls": [], "down": set(), "moved": {}, "handler": None}
    monkeypatch.setattr(gather_module, "own_url", lambda: SELF)
    monkeypatch.setattr(gather_module, "group_assignment", lambda *, table: dict(MEMBERS))

    def held(*, topic: str) -> frozenset[int]:
        assert topic == "things-changelog"
        member = _MEMBER.get()
        return state["moved"].get(member, MEMBERS[member])

    async def fetch(*, url: URL, headers: dict[str, str], timeout: float) -> tuple[int, Any]:
        member = str(url.origin())
        state["calls"].append({"member": member, "url": url, "headers": dict(headers), "timeout": timeout})
        if member in state["down"]:
            raise PartUnavailable(f"{member}: timed out")
        _MEMBER.set(member)
        status, body, _ = await _call(state["handler"], headers=headers, path=str(url.relative()))
        return status, body

    monkeypatch.setattr(gather_module, "held_partitions", held)
    monkeypatch.setattr(gather_module, "fetch_part", fetch)
    return state


def _merge(*, web: View, parts: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    return {"items": sorted(item for part in parts for item in part["items"])}


def _handler(group: dict[str, Any], access=USER, **declared: Any) -> Any:
    @endpoint(access=access, ready=True, summary="things", gather=Gather(scope=TABLE, merge=_merge), **declared)
    async def handler(web: View, request: Request, *, principal: Principal,
                      partitions: frozenset[int]) -> dict[str, Any] | Response:
        if request.query.get("bad"):
            return web.json({"error": "bad"}, status=400)
        return {"items": [f"{principal.user_id}-{p}" for p in sorted(partitions)]}

    group["handler"] = handler
    return handler


async def _call(handler: Any, *, headers: dict[str, str] | None = None,
                path: str = "/api/things") -> tuple[int, Any, Any]:
    from app.worker.main import app as faust_app

    view = View.from_handler(handler)(faust_app, faust_app.web)
    response = await view(make_mocked_request("GET", path, headers=headers or {}))
    return response.status, json.loads(response.body), response


def _auth(settings: Settings, *, sub: str = "alice", role: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings=settings, sub=sub, role=role)}"}


async def test_the_parts_of_every_member_are_merged_into_one_complete_answer(settings, group):
    status, body, _ = await _call(_handler(group), headers=_auth(settings), path="/api/things?x=1")
    assert status == 200
    assert body == {"items": [f"alice-{p}" for p in range(6)], "partial": False, "missing_partitions": []}
    asked = {c["member"]: c for c in group["calls"]}
    assert set(asked) == {"http://w1:6066", "http://w2:6066"}  # each other member once, not itself
    for member, call in asked.items():
        assert call["headers"][PART_HEADER] == ",".join(str(p) for p in sorted(MEMBERS[member]))
        assert call["headers"]["Authorization"] == _auth(settings)["Authorization"]
        assert str(call["url"].relative()) == "/api/things?x=1" and call["timeout"] == 0.5


async def test_a_member_that_does_not_answer_makes_a_503_or_a_flagged_partial_answer(settings, group):
    group["down"].add("http://w2:6066")
    handler = _handler(group)
    status, body, response = await _call(handler, headers=_auth(settings))
    assert (status, body["error"], body["missing_partitions"]) == (503, "incomplete answer", [4, 5])
    assert response.headers["Retry-After"] == "1"
    status, body, _ = await _call(handler, headers=_auth(settings), path="/api/things?allow_partial=true")
    assert status == 200
    assert body == {"items": ["alice-0", "alice-1", "alice-2", "alice-3"], "partial": True,
                    "missing_partitions": [4, 5]}


async def test_a_member_whose_partitions_moved_refuses_its_part_and_it_counts_missing(settings, group):
    group["moved"]["http://w1:6066"] = frozenset({2})  # partition 3 moved on, the assignment is stale
    status, body, _ = await _call(_handler(group), headers=_auth(settings), path="/api/things?allow_partial=1")
    assert (status, body["partial"], body["missing_partitions"]) == (200, True, [2, 3])
    assert body["items"] == ["alice-0", "alice-1", "alice-4", "alice-5"]


async def test_a_part_request_is_answered_locally_only(settings, group):
    handler = _handler(group)
    headers = {**_auth(settings), PART_HEADER: "0,1"}
    status, body, _ = await _call(handler, headers=headers)
    assert (status, body) == (200, {"partitions": [0, 1], "part": {"items": ["alice-0", "alice-1"]}})
    assert group["calls"] == []
    status, body, response = await _call(handler, headers={**_auth(settings), PART_HEADER: "0,1,2"})
    assert (status, body["error"], response.headers["Retry-After"]) == (503, "not ready", "1")
    status, _, _ = await _call(handler, headers={**_auth(settings), PART_HEADER: "zero"})
    assert status == 400
    assert group["calls"] == []


async def test_a_forged_or_missing_token_fails_before_any_fan_out(settings, group):
    forged = jwt.encode({"sub": "alice", "aud": settings.jwt_audience, "exp": 2**31 - 1, "role": "operator"},
                        "not-the-secret-" + "y" * 32, algorithm="HS256")
    for handler in (_handler(group), _handler(group, access=OPERATOR)):
        status, body, _ = await _call(handler, headers={"Authorization": f"Bearer {forged}"})
        assert status == 401 and body["error"].startswith("invalid token")
        status, _, _ = await _call(handler)
        assert status == 401
    status, _, _ = await _call(_handler(group, access=OPERATOR), headers=_auth(settings))
    assert status == 403
    assert group["calls"] == []


async def test_each_part_is_answered_for_the_forwarded_token(settings, group):
    status, body, _ = await _call(_handler(group), headers=_auth(settings, sub="bob"))
    assert status == 200 and body["items"] == [f"bob-{p}" for p in range(6)]


async def test_a_local_validation_error_is_the_answer_and_nothing_is_asked(settings, group):
    status, body, _ = await _call(_handler(group), headers=_auth(settings), path="/api/things?bad=1")
    assert (status, body) == (400, {"error": "bad"})
    assert group["calls"] == []


async def test_a_lone_worker_asks_nobody(settings, group, monkeypatch):
    monkeypatch.setattr(gather_module, "group_assignment", lambda *, table: {SELF: frozenset(range(6))})
    monkeypatch.setattr(gather_module, "held_partitions", lambda *, topic: frozenset(range(6)))
    status, body, _ = await _call(_handler(group), headers=_auth(settings))
    assert status == 200 and len(body["items"]) == 6 and body["partial"] is False
    assert group["calls"] == []


def test_a_gathered_route_must_be_ready_and_not_owner_routed():
    with pytest.raises(ValueError, match="ready=True"):
        endpoint(access=USER, summary="x", gather=Gather(scope=TABLE, merge=_merge))


def test_the_part_header_partitions_parse_strictly():
    assert gather_module.parse_partitions("3,1, 2") == frozenset({1, 2, 3})
    assert gather_module.parse_partitions("") == frozenset()
    for bad in ("a", "1,,2", "-1"):
        with pytest.raises(ValueError):
            gather_module.parse_partitions(bad)


async def test_local_asks_nobody_and_flags_what_it_lacks(settings, group):
    status, body, _ = await _call(_handler(group), headers=_auth(settings), path="/api/things?local=true")
    assert (status, body) == (200, {"items": ["alice-0", "alice-1"], "partial": True,
                                    "missing_partitions": [2, 3, 4, 5]})
    assert group["calls"] == []


async def test_a_part_fetch_is_bounded_by_the_timeout_and_needs_a_json_body(monkeypatch):
    """The real fetch over loopback HTTP (no broker): a slow member or a non-JSON answer is a
    PartUnavailable within the timeout; the headers reach the member."""
    import asyncio
    import time

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from app.worker.main import app as faust_app

    seen: list[dict[str, str]] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html>")

    async def ok(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"partitions": [1], "part": {"n": 1}})

    server = web.Application()
    server.router.add_get("/slow", slow)
    server.router.add_get("/text", text)
    server.router.add_get("/ok", ok)
    async with TestServer(server) as member, aiohttp.ClientSession() as session:
        monkeypatch.setattr(faust_app, "http_client", session)
        base = URL(str(member.make_url("/")))
        started = time.monotonic()
        with pytest.raises(PartUnavailable):
            await gather_module.fetch_part(url=base.join(URL("/slow")), headers={}, timeout=0.3)
        assert time.monotonic() - started < 2
        with pytest.raises(PartUnavailable):
            await gather_module.fetch_part(url=base.join(URL("/text")), headers={}, timeout=2)
        status, body = await gather_module.fetch_part(url=base.join(URL("/ok?a=1")),
                                                      headers={PART_HEADER: "1", "Authorization": "Bearer t"},
                                                      timeout=2)
        assert (status, body) == (200, {"partitions": [1], "part": {"n": 1}})
        assert seen[0][PART_HEADER] == "1" and seen[0]["Authorization"] == "Bearer t"
        await member.close()
        with pytest.raises(PartUnavailable):  # nobody listening any more
            await gather_module.fetch_part(url=base.join(URL("/ok")), headers={}, timeout=2)
