"""``GET /api/openapi.json``: an OpenAPI 3.0 document of every HTTP endpoint of the worker.

Built from a registry that view modules contribute to when they are imported::

    from app.web.openapi import document, query_param

    document("/api/things/{thing_id}", "GET", summary="One thing", auth="user",
             parameters=[query_param("limit", "1..100")], responses={200: "the thing", 404: "unknown"})

``auth`` is ``"none"``, ``"user"`` (any valid JWT), ``"publisher"`` (a JWT with the publisher
or the operator role) or ``"operator"`` (a JWT with the operator role). Path parameters are taken from the ``{name}`` parts of the path. A later ``document``
call for the same path and method replaces the earlier one. Endpoints of modules that do not
document themselves yet are described below, in :func:`_document_existing`.

``tests/integration/test_openapi.py`` compares this document with the routes registered on
the app's aiohttp router (both ways), so an endpoint added without its entry fails the test.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from faust.web import Request, Response, View

from app.main import app

#: (path, METHOD) → operation object.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {}
AUTH_KINDS = ("none", "user", "publisher", "operator")
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS", "*"})

_STANDARD_RESPONSES = {
    "user": {401: "missing, invalid or expired token (`Authorization: Bearer <jwt>`)"},
    "publisher": {401: "missing, invalid or expired token (`Authorization: Bearer <jwt>`)",
                  403: "the token has neither the publisher nor the operator role"},
    "operator": {401: "missing, invalid or expired token (`Authorization: Bearer <jwt>`)",
                 403: "the token lacks the operator role"},
}


def query_param(name: str, description: str, *, required: bool = False, kind: str = "string") -> dict[str, Any]:
    """An OpenAPI query parameter."""
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": kind}}


def header_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def canonical_path(path: str) -> str:
    """aiohttp's ``{name:regex}`` → OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def document(
    path: str,
    method: str,
    *,
    summary: str,
    auth: str = "none",
    description: str = "",
    parameters: Sequence[Mapping[str, Any]] = (),
    responses: Mapping[int, str] | None = None,
    request_body: str | None = None,
    content_type: str = "application/json",
    tags: Sequence[str] = (),
) -> None:
    """Describe one endpoint (``method`` on ``path``) of the HTTP API."""
    if auth not in AUTH_KINDS:
        raise ValueError(f"auth must be one of {AUTH_KINDS}, got {auth!r}")
    path = canonical_path(path)
    method = method.upper()
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    params.extend(dict(p) for p in parameters)
    answers = {200: "OK"} if responses is None else dict(responses)
    answers = {**_STANDARD_RESPONSES.get(auth, {}), **answers}
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'index'}",
        "x-auth": auth,
        "parameters": params,
        "responses": {
            str(code): {"description": text,
                        "content": {content_type if 200 <= code < 300 else "application/json": {}}}
            for code, text in sorted(answers.items())
        },
    }
    if description:
        operation["description"] = description
    if tags:
        operation["tags"] = list(tags)
    if auth != "none":
        operation["security"] = [{"bearerAuth": []}]
    if request_body:
        operation["requestBody"] = {"required": True, "description": request_body,
                                    "content": {"application/json": {}}}
    OPERATIONS[(path, method)] = operation


def build_document() -> dict[str, Any]:
    """The OpenAPI document of everything documented so far."""
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), operation in sorted(OPERATIONS.items()):
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Cosmic Horizons Events",
            "version": "1",
            "description": "The worker's HTTP API. `x-auth` on each operation: none, user (any valid "
                           "JWT) or operator (a JWT with the operator role). See docs/api.md.",
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


def _document_existing() -> None:
    """Endpoints of view modules that do not document themselves (yet)."""
    document("/", "GET", summary="The live operations dashboard page (public; holds no data)",
             content_type="text/html", tags=["dashboard"])
    document(
        "/api/events", "POST", summary="Ingest one JSON event or a JSON array (≤ 1,000) of events",
        auth="publisher",
        description="Needs a JWT with the publisher role (COSMIC_JWT_PUBLISHER_ROLE) or the operator role. "
                    "Validated, Avro-encoded and produced to Kafka; all-or-nothing. "
                    "202 once Kafka acknowledged every event.",
        parameters=[header_param("X-Correlation-ID", "fills correlation_id of events that carry none")],
        request_body="an event object or an array of events (fields of docs/events.md)",
        responses={202: '{"accepted", "event_ids", "correlation_ids"}',
                   400: '{"error", "field", "reason", "index"}: the bad field', 413: "body over COSMIC_INGEST_MAX_BYTES",
                   503: "Kafka did not acknowledge (or the codec could not encode)"},
        tags=["events"],
    )
    for path, what in (("/api/audit/resources/{resource_id}", "a resource's audit records, oldest first"),
                       ("/api/audit/actors/{actor}", "an actor's audit records, by time")):
        document(path, "GET", summary=what.capitalize(), auth="operator", tags=["audit"],
                 responses={200: "{..., \"count\", \"records\"}", 404: "no audit records",
                            503: "worker recovering or rebalancing (Retry-After)"})
    prefs = "/api/users/{user_id}/notification-preferences"
    document(prefs, "GET", summary="A user's notification preferences (or the defaults)", auth="user",
             tags=["notifications"], responses={200: '{"user_id", "channels", ...}', 403: "another user's (not an operator)",
                                                503: "worker not ready"})
    document(prefs, "PUT", summary="Set a user's notification preferences", auth="user", tags=["notifications"],
             request_body='{"channels": [WEBSOCKET|WEBHOOK|EMAIL], "webhook_url", "email"}',
             responses={202: '{"user_id", "preferences", "webhook_secret" (the first time only)}',
                        400: '{"error", "field", "reason"} (webhook_url: an internal address, or does not resolve)',
                        403: "another user's (not an operator)", 413: "body too large",
                        503: "Kafka did not acknowledge, or the owner worker is not known yet"})
    document(prefs + "/secret", "POST", summary="Rotate the user's webhook signing secret (returned once)",
             auth="user", tags=["notifications"],
             responses={202: '{"user_id", "webhook_secret"}', 403: "another user's (not an operator)",
                        503: "Kafka did not acknowledge, or webhook signing is not configured"})
    document(prefs, "DELETE", summary="Reset a user's notification preferences to the defaults", auth="user",
             tags=["notifications"], responses={202: '{"user_id", "preferences": null}', 403: "another user's",
                                                503: "Kafka did not acknowledge"})
    document("/api/users/{user_id}/notifications", "GET", summary="A user's recent notifications, newest first",
             auth="user", tags=["notifications"], parameters=[query_param("limit", "1..50, default 20", kind="integer")],
             responses={200: '{"user_id", "notifications": [...]}', 400: "bad limit", 403: "another user's",
                        503: "worker not ready"})
    document("/api/tables", "GET", summary="The app's tables: name, keys held here, partitions, changelog",
             auth="operator", tags=["tables"])
    document("/api/tables/{name}", "GET", summary="Dump a table as NDJSON of {key, value}", auth="operator",
             tags=["tables"], content_type="application/x-ndjson",
             parameters=[query_param("prefix", "only keys starting with this"),
                         query_param("limit", "at most this many lines (≤ 100,000)", kind="integer")],
             responses={200: "NDJSON lines", 400: "bad limit", 404: "unknown table"})
    document("/api/tables/{name}/keys/{key}", "GET", summary="One table value", auth="operator", tags=["tables"],
             responses={200: '{"key", "value"}', 404: "unknown table or key"})
    # operations, websocket feed, dashboard and metrics analytics (app/web/health.py, ws.py,
    # dashboard.py, metrics.py); a module's own document() call replaces these.
    document("/health", "GET", summary="Liveness: 200 while the process works", tags=["operations"],
             responses={200: "alive", 503: "crashed or health loop stuck"})
    document("/ready", "GET", summary="Readiness: tables recovered, Kafka, registry (and RabbitMQ) reachable",
             tags=["operations"], responses={200: "ready, with each check", 503: "not ready, naming the failing checks"})
    document("/metrics", "GET", summary="Prometheus metrics (text exposition format)", tags=["operations"],
             content_type="text/plain")
    document("/ws", "GET", summary="Websocket feed of job events and alerts (protocol: docs/websocket.md)",
             tags=["websocket"], description="JWT in the Authorization header or an auth frame first; "
                                             "tokens in the query string are refused.",
             responses={101: "switching protocols", 400: "not a websocket upgrade request",
                        401: "token in the query string or invalid header token",
                        403: "Origin not allowed", 503: "feed not running yet"})
    document("/static/{name}", "GET", summary="The dashboard's script and stylesheet", tags=["dashboard"],
             content_type="text/plain", responses={200: "the file", 404: "no such asset"})
    metric_responses = {401: "missing, invalid or expired token", 503: "worker recovering or rebalancing"}
    document("/api/metrics/jobs/{job_id}", "GET", summary="A job's metrics rollup (its owner or an operator)",
             auth="user", tags=["metrics"], responses={200: "the rollup", 404: "no metrics for this job",
                                                       **metric_responses})
    document("/api/metrics/cluster", "GET", summary="Newest cluster/node rollup windows", auth="user",
             tags=["metrics"], parameters=[query_param("window", "1m, 1h or 1d"),
                                           query_param("limit", "1..500, default 10", kind="integer")],
             responses={200: "windows", 400: "bad window or limit", **metric_responses})
    document("/api/metrics/gpus", "GET", summary="Latest GPU utilisation per node and GPU", auth="user",
             tags=["metrics"], responses={200: "per node and GPU", **metric_responses})
    document("/api/metrics/slow", "GET", summary="Jobs with the largest execution time", auth="user",
             tags=["metrics"], parameters=[query_param("limit", "1..100, default 10", kind="integer")],
             responses={200: "jobs", 400: "bad limit", **metric_responses})
    document("/api/metrics/runtimes", "GET", summary="Runtime statistics per job type", auth="user",
             tags=["metrics"], responses={200: "per job type: mean, σ, min, max, histogram", **metric_responses})


_document_existing()
document("/api/openapi.json", "GET", summary="This OpenAPI document", tags=["meta"])


@app.page("/api/openapi.json")
class OpenApiView(View):
    async def get(self, request: Request) -> Response:
        return self.json(build_document())
