"""The one way to declare an HTTP route: who may call it, whether it needs the worker's
tables, whether the key's owner answers it, and its OpenAPI entry.

A function view (GET)::

    @page("/api/things/{thing_id}")
    @endpoint(access=USER, ready=True, owner=Owner(table=things, key="thing_id"),
              summary="One thing", tags=["things"], responses={200: "the thing", 404: "unknown thing"})
    async def get_thing(web: View, request: Request, *, principal: Principal, thing_id: str) -> Response:
        ...

A class view: ``@page(path)`` on the class and ``@endpoint(...)`` on each of its HTTP methods
(``get``, ``post``, ``put``, ``patch``, ``delete``); :func:`page` refuses a method without one.

Every request goes through the same checks, in this order:

1. readiness (``ready=True``, for routes that read the worker's tables): ``503 {"error":
   "not ready", "reason"}`` with ``Retry-After`` while tables recover or the group
   rebalances — before the token, so a probe without one tells a ready worker by its 401;
2. access: :func:`public` (no token; only with a reason, listed by :func:`public_routes`),
   :data:`USER` (any valid JWT), :data:`PUBLISHER`, :data:`OPERATOR`, or
   :func:`self_or_operator` on a path parameter: ``401 {"error"}`` without a valid token,
   ``403 {"error"}`` without the right. The handler gets the caller as the keyword
   ``principal`` (public routes get none);
3. owner routing (``owner=Owner(...)``, needs ``ready=True``): what ``app.table_route`` does,
   with 503 while the changelog topic's partitions are not known yet; or gathering
   (``gather=Gather(...)``, needs ``ready=True``): the handler returns this worker's part for
   the partitions it is given (keyword ``partitions``) and :mod:`app.web.gather` asks every
   other member of the group for theirs and merges them — 503 (or ``"partial": true`` with
   ``?allow_partial=true``) when a part is missing;
4. the handler.

:mod:`app.web.openapi` builds ``/api/openapi.json`` from :data:`ROUTES` only.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

from faust.types import TableT
from faust.web import Request, Response, View

from app.core.auth import AuthError, Principal, authenticate, require_operator, require_publisher
from app.web import gather as gathering
from app.web.gather import Gather
from app.web.routing import not_ready, to_owner, worker_ready
from app.worker.main import app, settings

Handler = Callable[..., Awaitable[Response]]

_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
#: View methods that answer an HTTP method of their name (HEAD and OPTIONS are aiohttp's).
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "search")
#: Access kind → the ``x-auth`` of its OpenAPI operation.
X_AUTH = {"public": "none", "user": "user", "self_or_operator": "user", "publisher": "publisher",
          "operator": "operator"}


@dataclass(frozen=True, kw_only=True)
class Access:
    """Who may call a route; build it with the constants and functions below."""

    kind: str
    #: Why a public route needs no token (public routes only).
    reason: str = ""
    #: The path parameter naming the user (self_or_operator only), and what of theirs it guards.
    param: str = ""
    what: str = ""

    def __post_init__(self) -> None:
        if self.kind not in X_AUTH:
            raise ValueError(f"access kind must be one of {tuple(X_AUTH)}, got {self.kind!r}")
        if self.kind == "public" and not self.reason.strip():
            raise ValueError("a public route needs the reason it is safe without a token")
        if self.kind == "self_or_operator" and not self.param:
            raise ValueError("self_or_operator needs the path parameter naming the user")

    @property
    def x_auth(self) -> str:
        return X_AUTH[self.kind]

    def principal(self, *, request: Request, match: Mapping[str, Any]) -> Principal:
        """The caller, if allowed; AuthError (401/403) otherwise. Not for public routes."""
        if self.kind == "publisher":
            return require_publisher(headers=request.headers, query=request.query, settings=settings)
        if self.kind == "operator":
            return require_operator(headers=request.headers, query=request.query, settings=settings)
        principal = authenticate(headers=request.headers, query=request.query, settings=settings)
        if self.kind == "self_or_operator":
            user_id = match[self.param]
            if principal.user_id != user_id and not principal.operator:
                raise AuthError(f"user {principal.user_id} may not access {user_id}'s {self.what}", status=403)
        return principal


USER = Access(kind="user")
PUBLISHER = Access(kind="publisher")
OPERATOR = Access(kind="operator")


def public(*, reason: str) -> Access:
    """No token needed; ``reason`` says why that is safe (it is documented with the route)."""
    return Access(kind="public", reason=reason)


def self_or_operator(*, param: str = "user_id", what: str) -> Access:
    """A token whose ``sub`` is path parameter ``param``, or an operator's; ``what`` names the
    guarded data in the 403 (``user X may not access Y's <what>``)."""
    return Access(kind="self_or_operator", param=param, what=what)


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The worker owning the key (path parameter ``key``) of ``table`` answers the route."""

    table: TableT
    key: str


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """What one route method declares (see :func:`endpoint`)."""

    access: Access
    summary: str
    ready: bool = False
    owner: Owner | None = None
    gather: Gather | None = None
    description: str = ""
    parameters: tuple[Mapping[str, Any], ...] = ()
    responses: Mapping[int, str] = field(default_factory=dict)
    request_body: str | None = None
    content_type: str = "application/json"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Route:
    """A declared route: ``method`` on ``path`` (OpenAPI form, ``{name}`` parameters)."""

    path: str
    method: str
    endpoint: Endpoint

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


#: (path, METHOD) → the declared route, filled by :func:`page` as view modules are imported.
ROUTES: dict[tuple[str, str], Route] = {}


def canonical_path(path: str) -> str:
    """aiohttp's ``{name:regex}`` → OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def endpoint(
    *,
    access: Access,
    summary: str,
    ready: bool = False,
    owner: Owner | None = None,
    gather: Gather | None = None,
    description: str = "",
    parameters: Sequence[Mapping[str, Any]] = (),
    responses: Mapping[int, str] | None = None,
    request_body: str | None = None,
    content_type: str = "application/json",
    tags: Sequence[str] = (),
) -> Callable[[Handler], Handler]:
    """Declare and enforce one route method (the order of the checks: module docstring).

    ``gather``: the answer spans partitions and is gathered across the group
    (:mod:`app.web.gather`); the handler gets keyword ``partitions`` and returns its part (a
    dict) or an error Response.

    ``responses`` are the route's own answers (code → description); the 401/403/503 of its
    access and readiness are added to its OpenAPI entry unless given here."""
    if owner is not None and not ready:
        raise ValueError("owner routing reads the worker's tables: declare ready=True")
    if gather is not None and (not ready or owner is not None):
        raise ValueError("a gathered read needs ready=True and no owner routing (a key has one owner)")
    declared = Endpoint(access=access, summary=summary, ready=ready, owner=owner, gather=gather,
                        description=description,
                        parameters=tuple(parameters), responses=dict(responses or {200: "OK"}),
                        request_body=request_body, content_type=content_type, tags=tuple(tags))

    def decorator(handler: Handler) -> Handler:
        target = handler if owner is None else to_owner(table=owner.table, match_info=owner.key)(handler)

        @functools.wraps(handler)
        async def view(web: View, request: Request, **kwargs: Any) -> Response:
            if declared.ready:
                is_ready, reason = worker_ready()
                if not is_ready:
                    return not_ready(web, reason)
            if access.kind != "public":
                try:
                    kwargs["principal"] = access.principal(request=request, match=kwargs)
                except AuthError as exc:
                    return web.json({"error": str(exc)}, status=exc.status)
            if declared.gather is not None:
                return await gathering.answer(web=web, request=request, gather=declared.gather, handler=handler,
                                              kwargs=kwargs, timeout=settings.gather_timeout_seconds)
            return await target(web, request, **kwargs)

        view.__endpoint__ = declared  # type: ignore[attr-defined]
        return view

    return decorator


def declared_endpoint(handler: Any) -> Endpoint | None:
    return getattr(handler, "__endpoint__", None)


def page(path: str, *, name: str | None = None) -> Callable[[Any], type[View]]:
    """``app.page(path)`` for a handler or View class whose every HTTP method was declared
    with :func:`endpoint`; records each in :data:`ROUTES` (TypeError/ValueError otherwise)."""

    def decorator(target: Any) -> type[View]:
        if inspect.isclass(target):
            methods = {m: getattr(target, m) for m in HTTP_METHODS if getattr(target, m) is not getattr(View, m)}
        else:
            methods = {"get": target}
        if not methods:
            raise TypeError(f"{path}: the view answers no HTTP method")
        canonical = canonical_path(path)
        found = []
        for method, handler in methods.items():
            declared = declared_endpoint(handler)
            if declared is None:
                raise TypeError(f"{method.upper()} {path}: declare it with @endpoint(...) (app/web/route.py)")
            route = Route(path=canonical, method=method.upper(), endpoint=declared)
            named = set(route.path_params)
            for param in (declared.owner.key if declared.owner else None,
                          declared.access.param or None):
                if param is not None and param not in named:
                    raise ValueError(f"{route.method} {path}: {param!r} is not a path parameter")
            if (canonical, route.method) in ROUTES:
                raise ValueError(f"{route.method} {path} is declared twice")
            found.append(route)
        view = app.page(path, name=name)(target)
        for route in found:
            ROUTES[(route.path, route.method)] = route
        return view

    return decorator


def public_routes() -> dict[tuple[str, str], str]:
    """(path, METHOD) → why it is served without a token, for every public route declared."""
    return {key: route.endpoint.access.reason for key, route in sorted(ROUTES.items())
            if route.endpoint.access.kind == "public"}
