"""``GET /api/openapi.json``: an OpenAPI 3.0 document of every HTTP endpoint of the worker,
built only from what the routes declared with :func:`app.web.route.endpoint` (summary,
parameters, responses, access, readiness). Path parameters come from the ``{name}`` parts of
the path; the 401/403/503 answers of a route's access and readiness are added to its own.
A gathered route (``x-gather``) gets the ``allow_partial`` query parameter.

``x-auth`` of an operation is ``none``, ``user`` (any valid JWT; ``x-self-or-operator`` names
the path parameter when only that user or an operator may call it), ``publisher`` or
``operator``; a public operation carries ``x-public-reason``, why it needs no token.

``tests/integration/test_openapi.py`` compares this document with the routes registered on
the app's aiohttp router (both ways), so a route added without :func:`app.web.route.page`
fails there (and :func:`~app.web.route.page` refuses a method without its declaration).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from faust.web import Request, Response, View

from app.web.route import ROUTES, Route, canonical_path, endpoint, page, public

_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS", "*"})
_NO_TOKEN = "missing, invalid or expired token (`Authorization: Bearer <jwt>`)"
_NOT_READY = "worker recovering or rebalancing (Retry-After)"


def query_param(name: str, description: str, *, required: bool = False, kind: str = "string") -> dict[str, Any]:
    """An OpenAPI query parameter."""
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": kind}}


def header_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def _standard_responses(route: Route) -> dict[int, str]:
    """The answers every route of its access and readiness gives."""
    declared = route.endpoint
    access = declared.access
    answers: dict[int, str] = {}
    if access.kind != "public":
        answers[401] = _NO_TOKEN
    if access.kind == "publisher":
        answers[403] = "the token has neither the publisher nor the operator role"
    elif access.kind == "operator":
        answers[403] = "the token lacks the operator role"
    elif access.kind == "self_or_operator":
        answers[403] = f"another user's {access.what} (not an operator)"
    if declared.owner is not None:
        answers[503] = _NOT_READY + ", or the key's owner is not known yet"
    elif declared.gather is not None:
        answers[503] = _NOT_READY + ", or another worker's part of the answer is missing (see allow_partial)"
    elif declared.ready:
        answers[503] = _NOT_READY
    return answers


def operation(route: Route) -> dict[str, Any]:
    """The OpenAPI operation object of a declared route."""
    declared = route.endpoint
    access = declared.access
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in route.path_params
    ]
    params.extend(dict(p) for p in declared.parameters)
    if declared.gather is not None:
        params.append(query_param("allow_partial", "true: answer 200 with \"partial\": true and "
                                  "\"missing_partitions\" instead of 503 when a worker's part is missing",
                                  kind="boolean"))
        params.append(query_param("local", "true: only this worker's partitions, asking no other worker "
                                  "(flagged partial like allow_partial)", kind="boolean"))
    answers = {**_standard_responses(route), **declared.responses}
    op: dict[str, Any] = {
        "summary": declared.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', route.path).strip('_') or 'index'}",
        "x-auth": access.x_auth,
        "parameters": params,
        "responses": {
            str(code): {"description": text,
                        "content": {declared.content_type if 200 <= code < 300 else "application/json": {}}}
            for code, text in sorted(answers.items())
        },
    }
    if declared.description:
        op["description"] = declared.description
    if declared.tags:
        op["tags"] = list(declared.tags)
    if access.kind == "public":
        op["x-public-reason"] = access.reason
    else:
        op["security"] = [{"bearerAuth": []}]
    if access.kind == "self_or_operator":
        op["x-self-or-operator"] = access.param
    if declared.gather is not None:
        op["x-gather"] = True
    if declared.request_body:
        op["requestBody"] = {"required": True, "description": declared.request_body,
                             "content": {"application/json": {}}}
    return op


def build_document() -> dict[str, Any]:
    """The OpenAPI document of every route declared so far."""
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), route in sorted(ROUTES.items()):
        paths.setdefault(path, {})[method.lower()] = operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Cosmic Horizons Events",
            "version": "1",
            "description": "The worker's HTTP API. `x-auth` on each operation: none (with `x-public-reason`), "
                           "user (any valid JWT; `x-self-or-operator`: only that user or an operator), "
                           "publisher or operator (a JWT with that role). See docs/api.md.",
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


def documented_operations(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(path, METHOD) of every operation of an OpenAPI document."""
    return {(path, method.upper()) for path, item in doc.get("paths", {}).items() for method in item}


def router_operations(routes: Iterable[Any]) -> set[tuple[str, str]]:
    """(path, METHOD) of aiohttp routes (HEAD/OPTIONS and unnamed resources left out)."""
    found = set()
    for route in routes:
        resource = route.resource
        if resource is None or route.method in _IGNORED_METHODS:
            continue
        found.add((canonical_path(resource.canonical), route.method))
    return found


@page("/api/openapi.json")
class OpenApiView(View):
    @endpoint(access=public(reason="the description of the API; no data"), summary="This OpenAPI document",
              tags=["meta"])
    async def get(self, request: Request) -> Response:
        return self.json(build_document())
