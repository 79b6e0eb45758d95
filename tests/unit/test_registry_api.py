"""The registry's REST API over the real SchemaStore, with an in-memory log instead of Kafka."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.ops.registry.server import CONTENT_TYPE, create_registry_app
from app.ops.registry.store import (
    MemoryLog,
    RegistryState,
    SchemaStore,
    SchemaVersion,
    WriteConflict,
    schema_key,
    schema_value,
)

HEADERS = {"Content-Type": CONTENT_TYPE}


def record(*fields: dict, name: str = "User") -> str:
    return json.dumps({"type": "record", "name": name, "fields": list(fields)})


V1 = record({"name": "name", "type": "string"})
V2_BAD = record({"name": "name", "type": "string"}, {"name": "age", "type": "int"})
V2_OK = record({"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0})


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    store = SchemaStore(log=MemoryLog())
    await store.start()
    async with TestClient(TestServer(create_registry_app(store=store))) as c:
        yield c
    await store.stop()


async def call(client: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    resp = await client.request(method, path, data=data, headers=HEADERS)
    text = await resp.text()
    if resp.status < 300:
        assert resp.content_type == CONTENT_TYPE
    return resp.status, json.loads(text) if text else None


async def register(client: TestClient, subject: str, schema: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/subjects/{subject}/versions", {"schema": schema})


async def test_root_and_types(client: TestClient) -> None:
    assert await call(client, "GET", "/") == (200, {})
    assert await call(client, "GET", "/schemas/types") == (200, ["AVRO"])


async def test_register_is_idempotent_and_whitespace_insensitive(client: TestClient) -> None:
    status, body = await register(client, "s-value", V1)
    assert (status, body) == (200, {"id": 1})
    pretty = json.dumps(json.loads(V1), indent=4)
    assert await register(client, "s-value", pretty) == (200, {"id": 1})
    assert await call(client, "GET", "/subjects/s-value/versions") == (200, [1])


async def test_same_schema_under_two_subjects_shares_the_id(client: TestClient) -> None:
    _, a = await register(client, "a-value", V1)
    _, b = await register(client, "b-value", V1)
    _, c = await register(client, "c-value", record({"name": "x", "type": "int"}, name="Other"))
    assert a == b == {"id": 1}
    assert c == {"id": 2}
    assert await call(client, "GET", "/schemas/ids/1/versions") == (
        200,
        [{"subject": "a-value", "version": 1}, {"subject": "b-value", "version": 1}],
    )


async def test_accepts_plain_json_and_schema_type(client: TestClient) -> None:
    resp = await client.post(
        "/subjects/j/versions",
        data=json.dumps({"schema": V1, "schemaType": "AVRO"}),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200 and (await resp.json(content_type=None)) == {"id": 1}
    status, body = await call(client, "POST", "/subjects/j/versions", {"schema": V1, "schemaType": "PROTOBUF"})
    assert status == 422 and body["error_code"] == 42201


async def test_invalid_schema_is_42201(client: TestClient) -> None:
    bad = '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}'
    status, body = await register(client, "s", bad)
    assert status == 422 and body["error_code"] == 42201 and body["message"].startswith("Invalid schema")
    status, body = await call(client, "POST", "/subjects/s/versions", {})
    assert status == 422 and body["error_code"] == 42201


async def test_lookup_get_and_by_id(client: TestClient) -> None:
    await register(client, "s", V1)
    status, body = await call(client, "POST", "/subjects/s", {"schema": json.dumps(json.loads(V1), indent=2)})
    assert status == 200
    assert body["subject"] == "s" and body["id"] == 1 and body["version"] == 1
    assert json.loads(body["schema"]) == json.loads(V1)
    assert await call(client, "POST", "/subjects/nope", {"schema": V1}) == (
        404,
        {"error_code": 40401, "message": "Subject 'nope' not found."},
    )
    status, body = await call(client, "POST", "/subjects/s", {"schema": V2_OK})
    assert (status, body["error_code"]) == (404, 40403)

    status, latest = await call(client, "GET", "/subjects/s/versions/latest")
    assert status == 200 and latest["version"] == 1 and latest["id"] == 1
    assert (await call(client, "GET", "/subjects/s/versions/1"))[1] == latest
    resp = await client.get("/subjects/s/versions/1/schema")
    assert json.loads(await resp.text()) == json.loads(V1)
    assert await call(client, "GET", "/schemas/ids/1") == (200, {"schema": latest["schema"]})
    missing = {"error_code": 40403, "message": "Schema 99 not found"}
    assert await call(client, "GET", "/schemas/ids/99") == (404, missing)
    assert (await call(client, "GET", "/subjects/s/versions/2"))[1]["error_code"] == 40402
    assert (await call(client, "GET", "/subjects/x/versions/1"))[1]["error_code"] == 40401
    for bad in ("0", "abc", "-5"):
        status, body = await call(client, "GET", f"/subjects/s/versions/{bad}")
        assert (status, body["error_code"]) == (422, 42202), bad


async def test_backward_refuses_then_accepts(client: TestClient) -> None:
    await register(client, "s", V1)
    status, body = await register(client, "s", V2_BAD)
    assert status == 409 and body["error_code"] == 409
    assert "incompatible with an earlier schema" in body["message"]
    assert await register(client, "s", V2_OK) == (200, {"id": 2})
    assert await call(client, "GET", "/subjects/s/versions") == (200, [1, 2])


async def test_compatibility_endpoint(client: TestClient) -> None:
    await register(client, "s", V1)
    path = "/compatibility/subjects/s/versions/latest"
    assert await call(client, "POST", path, {"schema": V2_BAD}) == (200, {"is_compatible": False})
    assert await call(client, "POST", path, {"schema": V2_OK}) == (200, {"is_compatible": True})
    status, body = await call(client, "POST", path + "?verbose=true", {"schema": V2_BAD})
    assert status == 200 and body["is_compatible"] is False and body["messages"]
    status, body = await call(client, "POST", "/compatibility/subjects/nope/versions/latest", {"schema": V1})
    assert body["error_code"] == 40401


async def test_config_levels(client: TestClient) -> None:
    assert await call(client, "GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert await call(client, "PUT", "/config", {"compatibility": "full"}) == (200, {"compatibility": "FULL"})
    assert await call(client, "GET", "/config") == (200, {"compatibilityLevel": "FULL"})
    status, body = await call(client, "PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203)
    status, body = await call(client, "GET", "/config/s")
    assert (status, body["error_code"]) == (404, 40408)
    assert await call(client, "GET", "/config/s?defaultToGlobal=true") == (200, {"compatibilityLevel": "FULL"})
    assert await call(client, "PUT", "/config/s", {"compatibility": "NONE"}) == (200, {"compatibility": "NONE"})
    assert await call(client, "GET", "/config/s") == (200, {"compatibilityLevel": "NONE"})
    # the subject-level NONE lets an incompatible change through
    await register(client, "s", V1)
    assert await register(client, "s", '"string"') == (200, {"id": 2})
    assert await call(client, "DELETE", "/config/s") == (200, {"compatibilityLevel": "NONE"})
    assert (await call(client, "GET", "/config/s"))[0] == 404


async def test_forward_level_applies_to_register(client: TestClient) -> None:
    await call(client, "PUT", "/config/f", {"compatibility": "FORWARD"})
    await register(client, "f", V2_BAD)
    # removing the required 'age' breaks old readers
    status, body = await register(client, "f", V1)
    assert (status, body["error_code"]) == (409, 409)


async def test_soft_and_hard_delete_subject(client: TestClient) -> None:
    await register(client, "s", V1)
    await register(client, "s", V2_OK)
    status, body = await call(client, "DELETE", "/subjects/s?permanent=true")
    assert (status, body["error_code"]) == (404, 40405)
    assert await call(client, "DELETE", "/subjects/s") == (200, [1, 2])
    assert await call(client, "GET", "/subjects") == (200, [])
    assert await call(client, "GET", "/subjects?deleted=true") == (200, ["s"])
    status, body = await call(client, "DELETE", "/subjects/s")
    assert (status, body["error_code"]) == (404, 40404)
    assert (await call(client, "GET", "/subjects/s/versions"))[1]["error_code"] == 40401
    assert await call(client, "GET", "/subjects/s/versions?deleted=true") == (200, [1, 2])
    # ids survive a soft delete
    assert (await call(client, "GET", "/schemas/ids/2"))[0] == 200
    assert await call(client, "DELETE", "/subjects/s?permanent=true") == (200, [1, 2])
    assert await call(client, "GET", "/subjects?deleted=true") == (200, [])
    assert (await call(client, "DELETE", "/subjects/s"))[1]["error_code"] == 40401


async def test_register_after_soft_delete_keeps_counting_versions(client: TestClient) -> None:
    await register(client, "s", V1)
    await call(client, "DELETE", "/subjects/s")
    assert await register(client, "s", V1) == (200, {"id": 1})
    assert await call(client, "GET", "/subjects/s/versions") == (200, [2])


async def test_delete_version(client: TestClient) -> None:
    await register(client, "s", V1)
    await register(client, "s", V2_OK)
    status, body = await call(client, "DELETE", "/subjects/s/versions/1?permanent=true")
    assert (status, body["error_code"]) == (404, 40407)
    assert await call(client, "DELETE", "/subjects/s/versions/1") == (200, 1)
    assert (await call(client, "DELETE", "/subjects/s/versions/1"))[1]["error_code"] == 40406
    assert await call(client, "GET", "/subjects/s/versions") == (200, [2])
    assert await call(client, "DELETE", "/subjects/s/versions/1?permanent=true") == (200, 1)
    assert (await call(client, "GET", "/subjects/s/versions/1?deleted=true"))[1]["error_code"] == 40402
    assert await call(client, "DELETE", "/subjects/s/versions/latest") == (200, 2)
    assert (await call(client, "DELETE", "/subjects/s/versions/9"))[1]["error_code"] == 40402


async def test_unknown_route_and_bad_json(client: TestClient) -> None:
    status, body = await call(client, "GET", "/nowhere")
    assert status == 404 and body["error_code"] == 404
    resp = await client.post("/subjects/s/versions", data="{not json", headers=HEADERS)
    assert resp.status == 400 and (await resp.json(content_type=None))["error_code"] == 400


# ---- the deterministic fold that lets several registry processes share one topic


def _rec(subject: str, version: int, schema_id: int, schema: str, deleted: bool = False) -> tuple[bytes, bytes]:
    entry = SchemaVersion(subject=subject, version=version, id=schema_id, schema=schema, deleted=deleted)
    return schema_key(subject=subject, version=version), schema_value(entry=entry)


def _fold(records: list[tuple[bytes, bytes | None]]) -> RegistryState:
    state = RegistryState()
    for offset, (k, v) in enumerate(records):
        state.apply(k, v, offset)
    return state


def test_fold_ignores_records_that_lost_a_race() -> None:
    other = record({"name": "x", "type": "int"}, name="Other")
    state = _fold(
        [
            _rec("a", 1, 1, V1),
            _rec("a", 1, 2, other),  # version slot already taken
            _rec("b", 1, 1, other),  # id already bound to another schema
            _rec("c", 1, 5, V1),  # schema already has id 1
            (b"not json", b"{}"),  # malformed
            _rec("b", 1, 2, other),  # the retry with a fresh id wins
        ]
    )
    assert state.ignored == 4
    assert {s: {v: e.id for v, e in slots.items()} for s, slots in state.subjects.items()} == {"a": {1: 1}, "b": {1: 2}}
    assert state.schema_by_id(schema_id=2)[1] == json.dumps(json.loads(other), separators=(",", ":"))


def test_fold_of_hard_delete_frees_the_binding() -> None:
    state = _fold([_rec("a", 1, 1, V1), _rec("a", 1, 1, V1, deleted=True), (schema_key(subject="a", version=1), None)])
    assert state.subjects == {}
    with pytest.raises(Exception):
        state.schema_by_id(schema_id=1)


class FlakyLog(MemoryLog):
    """Fails the first append with a conflict, after sneaking in a rival's record."""

    def __init__(self, rival: tuple[bytes, bytes] | None) -> None:
        super().__init__()
        self.rival: tuple[bytes, bytes] | None = rival

    async def append(self, *, records):  # type: ignore[no-untyped-def]
        if self.rival is not None:
            rival, self.rival = self.rival, None
            await super().append(records=[rival])
            raise WriteConflict("fenced")
        await super().append(records=records)


async def test_store_replans_after_a_conflict() -> None:
    other = record({"name": "x", "type": "int"}, name="Other")
    flaky = FlakyLog(None)  # type: ignore[arg-type]
    store = SchemaStore(log=flaky)
    await store.start()
    await store.set_level(subject=None, level="NONE")
    # While we plan version 1 / id 1, a rival takes both and fences us: we must re-plan.
    flaky.rival = _rec("s", 1, 1, other)
    schema_id = await store.register(subject="s", schema=V1)
    assert schema_id == 2
    assert [e.id for e in store.state.entries(subject="s")] == [1, 2]


async def test_replay_rebuilds_the_same_state() -> None:
    log = MemoryLog()
    first = SchemaStore(log=log)
    await first.start()
    await first.register(subject="s", schema=V1)
    await first.register(subject="s", schema=V2_OK)
    await first.set_level(subject="s", level="FULL")
    await first.delete_version(subject="s", version=1)
    second = SchemaStore(log=MemoryLog())
    second.log.entries = list(log.entries)  # type: ignore[attr-defined]
    await second.start()
    assert second.state.subjects == first.state.subjects
    assert second.state.configs == first.state.configs == {"s": "FULL"}
