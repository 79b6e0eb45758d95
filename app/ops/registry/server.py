"""The Confluent-compatible REST API over a SchemaStore (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any, Awaitable, Callable

from aiohttp import web

from app.core.errors import RegistryError
from app.ops.registry.store import RegistryRefusal, SchemaStore, no_subject_level, parse_version

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
STORE_KEY: web.AppKey[SchemaStore] = web.AppKey("schema_store", SchemaStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(body: Any, *, status: int = 200) -> web.Response:
    """A JSON response with Confluent's media type."""
    return web.Response(status=status, text=json.dumps(body), content_type=CONTENT_TYPE)


def error(*, error_code: int, message: str) -> web.Response:
    """Confluent's error body; the HTTP status is the code's first three digits."""
    return reply({"error_code": error_code, "message": message}, status=int(str(error_code)[:3]))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryRefusal as exc:
        return error(error_code=exc.error_code, message=exc.message)
    except RegistryError as exc:
        log.error("schema store failure on %s %s: %s", request.method, request.path, exc)
        return error(error_code=50001, message=f"Error in the backend data store - {exc}")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(error_code=exc.status, message=exc.reason)
        raise


def _store(request: web.Request) -> SchemaStore:
    return request.app[STORE_KEY]


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").strip().lower() == "true"


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object body, whatever JSON-ish content type the client declared."""
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise RegistryRefusal(error_code=400, message=f"Malformed JSON request body: {exc}") from None
    if not isinstance(body, dict):
        raise RegistryRefusal(error_code=422, message="Request body must be a JSON object")
    if body.get("references"):
        raise RegistryRefusal(error_code=42201, message="Invalid schema: schema references are not supported")
    return body


def _entry_json(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"subject": entry.subject, "version": entry.version, "id": entry.id}
    if entry.schema_type != "AVRO":
        out["schemaType"] = entry.schema_type
    out["schema"] = entry.schema
    return out


# ---- handlers


async def root(request: web.Request) -> web.Response:
    return reply({})


async def schema_types(request: web.Request) -> web.Response:
    return reply(["AVRO"])


async def list_subjects(request: web.Request) -> web.Response:
    return reply(_store(request).state.subject_names(deleted=_flag(request, "deleted")))


async def register(request: web.Request) -> web.Response:
    body = await _body(request)
    schema_id = await _store(request).register(
        subject=request.match_info["subject"], schema=body.get("schema"), schema_type=body.get("schemaType")
    )
    return reply({"id": schema_id})


async def lookup(request: web.Request) -> web.Response:
    body = await _body(request)
    store = _store(request)
    kind, text = store.prepare(schema=body.get("schema"), schema_type=body.get("schemaType"))
    entry = store.state.lookup(
        subject=request.match_info["subject"], schema_type=kind, schema=text, deleted=_flag(request, "deleted")
    )
    return reply(_entry_json(entry))


async def list_versions(request: web.Request) -> web.Response:
    entries = _store(request).state.entries(subject=request.match_info["subject"], deleted=_flag(request, "deleted"))
    return reply([e.version for e in entries])


async def get_version(request: web.Request) -> web.Response:
    entry = _store(request).state.entry(
        subject=request.match_info["subject"],
        version=parse_version(request.match_info["version"]),
        deleted=_flag(request, "deleted"),
    )
    return reply(_entry_json(entry))


async def get_version_schema(request: web.Request) -> web.Response:
    entry = _store(request).state.entry(
        subject=request.match_info["subject"],
        version=parse_version(request.match_info["version"]),
        deleted=_flag(request, "deleted"),
    )
    return web.Response(text=entry.schema, content_type=CONTENT_TYPE)


def _schema_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        return int(raw)
    except ValueError:
        raise RegistryRefusal(error_code=40403, message=f"Schema {raw} not found") from None


async def get_schema_by_id(request: web.Request) -> web.Response:
    kind, text = _store(request).state.schema_by_id(schema_id=_schema_id(request))
    return reply({"schema": text} if kind == "AVRO" else {"schemaType": kind, "schema": text})


async def get_schema_text_by_id(request: web.Request) -> web.Response:
    _kind, text = _store(request).state.schema_by_id(schema_id=_schema_id(request))
    return web.Response(text=text, content_type=CONTENT_TYPE)


async def get_schema_usages(request: web.Request) -> web.Response:
    state = _store(request).state
    schema_id = _schema_id(request)
    state.schema_by_id(schema_id=schema_id)
    usages = state.usages(schema_id=schema_id, deleted=_flag(request, "deleted"))
    return reply([{"subject": e.subject, "version": e.version} for e in usages])


async def get_schema_subjects(request: web.Request) -> web.Response:
    state = _store(request).state
    schema_id = _schema_id(request)
    state.schema_by_id(schema_id=schema_id)
    usages = state.usages(schema_id=schema_id, deleted=_flag(request, "deleted"))
    return reply(sorted({e.subject for e in usages}))


async def delete_subject(request: web.Request) -> web.Response:
    versions = await _store(request).delete_subject(
        subject=request.match_info["subject"], permanent=_flag(request, "permanent")
    )
    return reply(versions)


async def delete_version(request: web.Request) -> web.Response:
    version = await _store(request).delete_version(
        subject=request.match_info["subject"],
        version=parse_version(request.match_info["version"]),
        permanent=_flag(request, "permanent"),
    )
    return reply(version)


async def test_compatibility(request: web.Request) -> web.Response:
    body = await _body(request)
    raw_version = request.match_info.get("version")
    result = _store(request).check_compatibility(
        subject=request.match_info["subject"],
        version=None if raw_version is None else parse_version(raw_version),
        schema=body.get("schema"),
        schema_type=body.get("schemaType"),
        all_versions=raw_version is None,
    )
    out: dict[str, Any] = {"is_compatible": result.is_compatible}
    if _flag(request, "verbose"):
        out["messages"] = list(result.messages)
    return reply(out)


async def get_global_config(request: web.Request) -> web.Response:
    return reply({"compatibilityLevel": _store(request).state.global_level()})


async def put_config(request: web.Request) -> web.Response:
    body = await _body(request)
    level = await _store(request).set_level(subject=request.match_info.get("subject"), level=body.get("compatibility"))
    return reply({"compatibility": level})


async def delete_config(request: web.Request) -> web.Response:
    old = await _store(request).delete_level(subject=request.match_info.get("subject"))
    return reply({"compatibilityLevel": old})


async def get_subject_config(request: web.Request) -> web.Response:
    state = _store(request).state
    subject = request.match_info["subject"]
    level = state.configs.get(subject)
    if level is None:
        if not _flag(request, "defaultToGlobal"):
            raise no_subject_level(subject)
        level = state.global_level()
    return reply({"compatibilityLevel": level})


def create_registry_app(*, store: SchemaStore) -> web.Application:
    """The aiohttp application; the caller starts and stops ``store``."""
    app = web.Application(middlewares=[errors_middleware])
    app[STORE_KEY] = store
    r = app.router
    r.add_get("/", root)
    r.add_get("/schemas/types", schema_types)
    r.add_get("/schemas/ids/{id}", get_schema_by_id)
    r.add_get("/schemas/ids/{id}/schema", get_schema_text_by_id)
    r.add_get("/schemas/ids/{id}/versions", get_schema_usages)
    r.add_get("/schemas/ids/{id}/subjects", get_schema_subjects)
    r.add_get("/subjects", list_subjects)
    r.add_post("/subjects/{subject}", lookup)
    r.add_delete("/subjects/{subject}", delete_subject)
    r.add_get("/subjects/{subject}/versions", list_versions)
    r.add_post("/subjects/{subject}/versions", register)
    r.add_get("/subjects/{subject}/versions/{version}", get_version)
    r.add_delete("/subjects/{subject}/versions/{version}", delete_version)
    r.add_get("/subjects/{subject}/versions/{version}/schema", get_version_schema)
    r.add_post("/compatibility/subjects/{subject}/versions", test_compatibility)
    r.add_post("/compatibility/subjects/{subject}/versions/{version}", test_compatibility)
    r.add_get("/config", get_global_config)
    r.add_put("/config", put_config)
    r.add_delete("/config", delete_config)
    r.add_get("/config/{subject}", get_subject_config)
    r.add_put("/config/{subject}", put_config)
    r.add_delete("/config/{subject}", delete_config)
    return app


def _quiet_fencing(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiokafka leaves ProducerFenced futures unretrieved when another registry fences us."""
    exc = context.get("exception")
    if exc is not None and type(exc).__name__ == "ProducerFenced":
        log.debug("producer fenced by another registry process")
        return
    loop.default_exception_handler(context)


async def serve(*, store: SchemaStore, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Start ``store``, serve HTTP on host:port until SIGTERM/SIGINT (or ``stop``), then shut down."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_fencing)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await store.start()
    runner = web.AppRunner(create_registry_app(store=store), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host=host, port=port)
        await site.start()
        log.info("schema registry listening on http://%s:%s", host, port)
        await stop.wait()
        log.info("schema registry shutting down")
    finally:
        await runner.cleanup()
        await store.stop()
