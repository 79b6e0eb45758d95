"""``GET /api/openapi.json`` describes every HTTP endpoint: the document a running worker
serves is compared, both ways, with the routes on the app's aiohttp router (HEAD and
OPTIONS aside), so an endpoint added without its ``document(...)`` entry fails here."""

from __future__ import annotations

import asyncio
import re


def _router_operations() -> set[tuple[str, str]]:
    """The routes of the same app code the worker runs: autodiscovered views on aiohttp's router."""
    from app.worker.main import app
    from app.web.openapi import router_operations

    app.discover()  # imports agents, tables and every app.web view module, as a worker does
    app.web.init_server()  # Faust's own blueprints (idempotent)
    return router_operations(app.web.web_app.router.routes())


async def test_every_route_is_documented_and_every_documented_route_exists(worker_factory):
    worker = await asyncio.to_thread(worker_factory().start)
    status, doc = await asyncio.to_thread(worker.get_json, "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    from app.web.openapi import documented_operations

    documented = documented_operations(doc)
    routed = _router_operations()
    assert ("/api/openapi.json", "GET") in routed
    assert routed - documented == set(), f"endpoints missing from /api/openapi.json: {sorted(routed - documented)}"
    assert documented - routed == set(), f"documented endpoints that do not exist: {sorted(documented - routed)}"

    for path, item in doc["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            assert operation["summary"] and operation["responses"], (method, path)
            assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == names, (method, path)
            assert operation["x-auth"] in ("none", "user", "publisher", "operator")
            if operation["x-auth"] != "none":
                assert operation["security"] == [{"bearerAuth": []}] and "401" in operation["responses"]
    # the routes a worker answers are those of the router built here: spot-check the new ones
    token = worker.operator_token()
    assert token
    for path in ("/api/stats", "/api/jobs", "/api/events/replay?topic=nope&start=0&end=1"):
        code, _ = await asyncio.to_thread(worker.get_json, path)
        assert code == 401, path  # registered (a missing route would be aiohttp's 404)
