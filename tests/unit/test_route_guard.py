"""The one route declaration of ``app/web/route.py``: every access level refuses what it
should (401 without a token or with a forged one, 403 for the wrong role or another user),
readiness answers 503 first, owner routing waits for the topic's partitions, and the
OpenAPI document lists every declared route exactly once — public ones with their reason."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from faust.web import Request, Response, View

import app.web
import app.web.route as route_module
from app.core.auth import Principal, mint_token
from app.core.settings import Settings
from app.web.route import (
    OPERATOR, PUBLISHER, USER, ROUTES, Access, Owner, endpoint, page, public, public_routes, self_or_operator,
)

SECRET = "route-unit-secret-" + "x" * 32
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture(autouse=True)
def jwt_settings(monkeypatch) -> Settings:
    settings = Settings.from_env(environ={"COSMIC_JWT_SECRET": SECRET})
    monkeypatch.setattr(route_module, "settings", settings)
    monkeypatch.setattr(route_module, "worker_ready", lambda: (True, ""))
    return settings


def _token(settings: Settings, *, sub: str = "alice", role: str | None = None) -> str:
    return mint_token(settings=settings, sub=sub, role=role)


def _forged(settings: Settings) -> str:
    return jwt.encode({"sub": "alice", "aud": settings.jwt_audience, "exp": 2**31 - 1, "role": "operator"},
                      "not-the-secret-" + "y" * 32, algorithm="HS256")


async def _call(handler: Any, *, token: str | None = None, match: dict[str, str] | None = None,
                path: str = "/x") -> tuple[int, dict[str, Any], Any]:
    """Call ``handler`` (an @endpoint function) as Faust's view would: (status, JSON body, response)."""
    from app.worker.main import app as faust_app

    view = View.from_handler(handler)(faust_app, faust_app.web)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = make_mocked_request("GET", path, headers=headers, match_info=match or {})
    response = await view(request)
    return response.status, json.loads(response.body), response


def _echo(access: Access, **declared: Any) -> Any:
    @endpoint(access=access, summary="echo", **declared)
    async def handler(web: View, request: Request, *, principal: Principal | None = None, **match: str) -> Response:
        return web.json({"user": principal.user_id if principal else None, **match})

    return handler


@pytest.mark.parametrize("access", [USER, PUBLISHER, OPERATOR, self_or_operator(param="user_id", what="things")])
async def test_every_access_level_refuses_a_missing_or_forged_token(access, jwt_settings):
    handler = _echo(access)
    match = {"user_id": "alice"}
    status, body, _ = await _call(handler, match=match)
    assert status == 401 and "missing bearer token" in body["error"]
    status, body, _ = await _call(handler, token=_forged(jwt_settings), match=match)
    assert status == 401 and body["error"].startswith("invalid token")
    # a valid token in the query string is refused too
    status, body, _ = await _call(handler, match=match, path=f"/x?token={_token(jwt_settings, role='operator')}")
    assert status == 401 and "query string" in body["error"]


@pytest.mark.parametrize(("access", "role", "allowed"), [
    (USER, None, True), (USER, "operator", True),
    (PUBLISHER, None, False), (PUBLISHER, "publisher", True), (PUBLISHER, "operator", True),
    (OPERATOR, None, False), (OPERATOR, "publisher", False), (OPERATOR, "operator", True),
])
async def test_roles(access, role, allowed, jwt_settings):
    status, body, _ = await _call(_echo(access), token=_token(jwt_settings, role=role))
    if allowed:
        assert (status, body) == (200, {"user": "alice"})
    else:
        assert status == 403 and "role required" in body["error"]


async def test_self_or_operator_refuses_another_user(jwt_settings):
    handler = _echo(self_or_operator(param="user_id", what="notifications"))
    status, body, _ = await _call(handler, token=_token(jwt_settings, sub="bob"), match={"user_id": "alice"})
    assert (status, body) == (403, {"error": "user bob may not access alice's notifications"})
    for sub, role in (("alice", None), ("carol", "operator")):
        status, body, _ = await _call(handler, token=_token(jwt_settings, sub=sub, role=role),
                                      match={"user_id": "alice"})
        assert (status, body) == (200, {"user": sub, "user_id": "alice"})


async def test_public_routes_need_no_token_and_get_no_principal():
    status, body, _ = await _call(_echo(public(reason="test")))
    assert (status, body) == (200, {"user": None})
    with pytest.raises(ValueError, match="reason"):
        public(reason=" ")


async def test_readiness_answers_503_before_the_token(monkeypatch, jwt_settings):
    monkeypatch.setattr(route_module, "worker_ready", lambda: (False, "tables are recovering"))
    for access in (USER, OPERATOR):
        status, body, response = await _call(_echo(access, ready=True))  # no token: still 503
        assert (status, body) == (503, {"error": "not ready", "reason": "tables are recovering"})
        assert response.headers["Retry-After"] == "1"
    status, _, _ = await _call(_echo(USER), token=_token(jwt_settings))  # not declared: not checked
    assert status == 200


async def test_owner_routing_waits_for_the_topics_partitions(monkeypatch, jwt_settings):
    from tables.job_state import job_state

    async def unknown(**_: Any) -> bool:
        return False

    monkeypatch.setattr("app.web.routing.knows_partitions", unknown)
    handler = _echo(USER, ready=True, owner=Owner(table=job_state, key="job_id"))
    status, _, _ = await _call(handler, match={"job_id": "j-1"})
    assert status == 401  # access comes before owner routing
    status, body, response = await _call(handler, token=_token(jwt_settings), match={"job_id": "j-1"})
    assert (status, body["error"], response.headers["Retry-After"]) == (503, "not ready", "1")
    with pytest.raises(ValueError, match="ready=True"):
        endpoint(access=USER, summary="x", owner=Owner(table=job_state, key="job_id"))


def test_page_refuses_an_undeclared_method_and_unknown_parameters():
    class Undeclared(View):
        async def get(self, request: Request) -> Response:  # pragma: no cover - refused
            return self.json({})

    with pytest.raises(TypeError, match="@endpoint"):
        page("/api/unit-test/undeclared")(Undeclared)
    with pytest.raises(ValueError, match="user_id"):
        page("/api/unit-test/{name}")(_echo(self_or_operator(param="user_id", what="things")))
    assert not any(path.startswith("/api/unit-test") for path, _ in ROUTES)


def _import_views() -> None:
    for module in pkgutil.iter_modules(app.web.__path__):
        importlib.import_module(f"app.web.{module.name}")


def test_the_openapi_document_has_every_declared_route_once():
    from app.worker.main import app as faust_app
    from app.web.openapi import build_document, documented_operations, router_operations

    _import_views()
    doc = build_document()
    operations = [(path, method.upper()) for path, item in doc["paths"].items() for method in item]
    assert len(operations) == len(set(operations))
    assert set(operations) == set(ROUTES)
    assert documented_operations(doc) == router_operations(faust_app.web.web_app.router.routes())
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for (path, method), route in ROUTES.items():
        op = doc["paths"][path][method.lower()]
        assert op["summary"] == route.endpoint.summary
        assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == set(re.findall(r"\{([^}]+)\}", path))
        if route.endpoint.access.kind == "public":
            assert op["x-auth"] == "none" and op["x-public-reason"] and "security" not in op
        else:
            assert op["security"] == [{"bearerAuth": []}] and "401" in op["responses"]
        if route.endpoint.ready:
            assert "503" in op["responses"], (method, path)


def test_the_public_routes_are_the_documented_list_with_reasons():
    _import_views()
    assert set(public_routes()) == {
        ("/", "GET"), ("/static/{name}", "GET"), ("/health", "GET"), ("/ready", "GET"), ("/metrics", "GET"),
        ("/api/openapi.json", "GET"), ("/ws", "GET"),
    }
    docs = DOCS.read_text()
    section = docs[docs.index("## Public routes"):]
    section = section[:section.index("\n## ", 1)]
    for (path, method), reason in public_routes().items():
        row = f"| `{method} {path}` | {reason} |"
        assert row in section, f"docs/api.md's public routes lack: {row}"
    assert section.count("\n| `") == len(public_routes())
