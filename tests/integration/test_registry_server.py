"""The registry as a real process against a real Kafka broker (COSMIC_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import fastavro
import httpx
import pytest
from support.polling import wait_until

from app.ops.worker_process import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("COSMIC_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


@dataclass
class Registry:
    """One ``python -m app.ops.registry`` process."""

    topic: str
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60.0) -> "Registry":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COSMIC_KAFKA_BOOTSTRAP": BOOTSTRAP}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "app.ops.registry",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--bootstrap", BOOTSTRAP, "--topic", self.topic,
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def serving() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            return httpx.get(self.url + "/", timeout=1.0).status_code == 200

        if wait_until(serving, timeout=timeout, interval=0.2, what="the registry serving", ignore=(httpx.HTTPError,),
                      fail=False):
            return self
        self.stop()
        raise RuntimeError(f"registry did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log.close()
        return proc.returncode


@pytest.fixture
def new_registry(tmp_path: Path) -> Iterator:
    """Factory: ``new_registry(topic)`` starts a registry process; all are stopped at teardown."""
    started: list[Registry] = []

    def make(topic: str) -> Registry:
        reg = Registry(topic=topic, port=free_port(), log_path=tmp_path / f"registry-{len(started)}.log")
        started.append(reg)
        return reg.start()

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def topic() -> str:
    return f"_schemas-test-{uuid.uuid4().hex}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


def record(*fields: dict, name: str = "Sighting") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "cosmic.test", "fields": list(fields)})


OBJECT = {"name": "object", "type": "string"}
MAGNITUDE = {"name": "magnitude", "type": "double"}
V1 = record(OBJECT)
V2_BAD = record(OBJECT, MAGNITUDE)
V2_OK = record(OBJECT, {**MAGNITUDE, "default": 0.0})


async def post(http: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    return await http.post(url, content=json.dumps(body), headers=CT)


async def test_round_trips(new_registry, topic: str, http: httpx.AsyncClient) -> None:
    url = new_registry(topic).url
    r = await post(http, f"{url}/subjects/sightings-value/versions", {"schema": V1})
    assert r.status_code == 200 and r.json() == {"id": 1}
    assert r.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    pretty = json.dumps(json.loads(V1), indent=2)
    r = await post(http, f"{url}/subjects/sightings-value/versions", {"schema": pretty, "schemaType": "AVRO"})
    assert r.json() == {"id": 1}
    r = await post(http, f"{url}/subjects/other-value/versions", {"schema": V1})
    assert r.json() == {"id": 1}, "same schema under another subject keeps its id"

    r = await post(http, f"{url}/subjects/sightings-value", {"schema": pretty})
    assert r.status_code == 200
    found = {k: r.json()[k] for k in ("subject", "id", "version")}
    assert found == {"subject": "sightings-value", "id": 1, "version": 1}
    r = await post(http, f"{url}/subjects/sightings-value", {"schema": V2_OK})
    assert (r.status_code, r.json()["error_code"]) == (404, 40403)
    r = await post(http, f"{url}/subjects/ghost", {"schema": V1})
    assert r.json() == {"error_code": 40401, "message": "Subject 'ghost' not found."}

    assert (await http.get(f"{url}/subjects")).json() == ["other-value", "sightings-value"]
    assert (await http.get(f"{url}/subjects/sightings-value/versions")).json() == [1]
    latest = (await http.get(f"{url}/subjects/sightings-value/versions/latest")).json()
    assert latest["id"] == 1 and latest["version"] == 1 and json.loads(latest["schema"]) == json.loads(V1)
    assert (await http.get(f"{url}/schemas/ids/1")).json() == {"schema": latest["schema"]}
    assert (await http.get(f"{url}/schemas/ids/42")).json()["error_code"] == 40403
    assert (await http.get(f"{url}/schemas/types")).json() == ["AVRO"]

    assert (await http.get(f"{url}/config")).json() == {"compatibilityLevel": "BACKWARD"}
    r = await http.put(f"{url}/config/sightings-value", content=json.dumps({"compatibility": "FULL"}), headers=CT)
    assert r.json() == {"compatibility": "FULL"}
    assert (await http.get(f"{url}/config/sightings-value")).json() == {"compatibilityLevel": "FULL"}
    assert (await http.get(f"{url}/config/other-value")).json()["error_code"] == 40408
    r = await http.put(f"{url}/config", content=json.dumps({"compatibility": "BOGUS"}), headers=CT)
    assert (r.status_code, r.json()["error_code"]) == (422, 42203)
    assert (await http.delete(f"{url}/config/sightings-value")).json() == {"compatibilityLevel": "FULL"}

    r = await http.delete(f"{url}/subjects/other-value?permanent=true")
    assert (r.status_code, r.json()["error_code"]) == (404, 40405)
    assert (await http.delete(f"{url}/subjects/other-value")).json() == [1]
    assert (await http.get(f"{url}/subjects")).json() == ["sightings-value"]
    assert (await http.get(f"{url}/subjects?deleted=true")).json() == ["other-value", "sightings-value"]
    assert (await http.delete(f"{url}/subjects/other-value")).json()["error_code"] == 40404
    assert (await http.delete(f"{url}/subjects/other-value?permanent=true")).json() == [1]
    assert (await http.get(f"{url}/subjects?deleted=true")).json() == ["sightings-value"]
    assert (await http.get(f"{url}/schemas/ids/1")).status_code == 200, "still used by sightings-value"


async def test_backward_evolution_and_old_reader_decodes_new_data(new_registry, topic: str, http) -> None:
    url = new_registry(topic).url
    assert (await post(http, f"{url}/subjects/s-value/versions", {"schema": V1})).json() == {"id": 1}
    r = await post(http, f"{url}/compatibility/subjects/s-value/versions/latest?verbose=true", {"schema": V2_BAD})
    assert r.json()["is_compatible"] is False and r.json()["messages"]
    r = await post(http, f"{url}/subjects/s-value/versions", {"schema": V2_BAD})
    assert r.status_code == 409 and r.json()["error_code"] == 409
    r = await post(http, f"{url}/subjects/s-value/versions", {"schema": V2_OK})
    assert r.status_code == 200 and r.json() == {"id": 2}
    assert (await http.get(f"{url}/subjects/s-value/versions")).json() == [1, 2]

    new = fastavro.parse_schema(json.loads((await http.get(f"{url}/schemas/ids/2")).json()["schema"]))
    old = fastavro.parse_schema(json.loads((await http.get(f"{url}/subjects/s-value/versions/1")).json()["schema"]))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, new, {"object": "M31", "magnitude": 3.44})
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, new, old) == {"object": "M31"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, {"object": "M42"})
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, old, new) == {"object": "M42", "magnitude": 0.0}


async def _snapshot(http: httpx.AsyncClient, url: str) -> dict:
    subjects = (await http.get(f"{url}/subjects?deleted=true")).json()
    out: dict = {"subjects": subjects, "config": (await http.get(f"{url}/config")).json(), "versions": {}}
    for s in subjects:
        for v in (await http.get(f"{url}/subjects/{s}/versions?deleted=true")).json():
            body = (await http.get(f"{url}/subjects/{s}/versions/{v}?deleted=true")).json()
            out["versions"][(s, v)] = (body["id"], body["schema"])
    return out


async def test_restart_keeps_everything(new_registry, topic: str, http) -> None:
    first = new_registry(topic)
    url = first.url
    await http.put(f"{url}/config", content=json.dumps({"compatibility": "NONE"}), headers=CT)
    ids = []
    for n in range(5):
        for schema in (V1, V2_OK, record(OBJECT, name=f"Only{n}")):
            r = await post(http, f"{url}/subjects/sub-{n}/versions", {"schema": schema})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
    assert sorted(set(ids)) == list(range(1, 8)), "V1 and V2_OK are shared, each Only<n> is new"
    await http.put(f"{url}/config/sub-0", content=json.dumps({"compatibility": "FULL"}), headers=CT)
    await http.delete(f"{url}/subjects/sub-4/versions/1")
    before = await _snapshot(http, url)
    assert len(before["versions"]) == 15
    assert first.stop() == 0, "SIGTERM must shut the registry down cleanly"

    second = new_registry(topic)
    after = await _snapshot(http, second.url)
    assert after == before
    assert after["config"] == {"compatibilityLevel": "NONE"}
    assert (await http.get(f"{second.url}/config/sub-0")).json() == {"compatibilityLevel": "FULL"}
    assert (await http.get(f"{second.url}/subjects/sub-4/versions")).json() == [2, 3]
    for schema_id in range(1, 8):
        assert (await http.get(f"{second.url}/schemas/ids/{schema_id}")).status_code == 200
    r = await post(http, f"{second.url}/subjects/fresh/versions", {"schema": record(OBJECT, name="Fresh")})
    assert r.json()["id"] == 8, "ids continue after the highest one already used"
    r = await post(http, f"{second.url}/subjects/sub-1/versions", {"schema": V2_OK})
    assert r.json()["id"] == 2, "re-registering an existing schema finds it after the restart"
    assert (await http.get(f"{second.url}/subjects/sub-1/versions")).json() == [1, 2, 3]


async def test_two_processes_agree_on_ids(new_registry, topic: str, http) -> None:
    a, b = new_registry(topic), new_registry(topic)

    async def reg(url: str, n: int) -> tuple[str, int]:
        schema = record(OBJECT, name=f"Kind{n}")
        r = await post(http, f"{url}/subjects/kind-{n}-value/versions", {"schema": schema})
        assert r.status_code == 200, r.text
        return schema, r.json()["id"]

    shared = record(OBJECT, name="Shared")
    results = await asyncio.gather(
        *(reg(a.url, n) for n in range(20)),
        *(reg(b.url, n) for n in range(20, 40)),
        post(http, f"{a.url}/subjects/shared-a/versions", {"schema": shared}),
        post(http, f"{b.url}/subjects/shared-b/versions", {"schema": shared}),
    )
    pairs, shared_a, shared_b = results[:40], results[40], results[41]
    ids = [i for _, i in pairs]
    assert len(set(ids)) == 40, "no id may be handed out twice"
    assert shared_a.json() == shared_b.json(), "one schema, one id, whichever process registered it"
    assert shared_a.json()["id"] not in ids

    for url in (a.url, b.url):
        for schema, schema_id in pairs:
            body = (await http.get(f"{url}/schemas/ids/{schema_id}")).json()
            assert json.loads(body["schema"]) == json.loads(schema)
        assert len((await http.get(f"{url}/subjects")).json()) == 42
    assert await _snapshot(http, a.url) == await _snapshot(http, b.url)


async def test_python_schema_registry_client(new_registry, topic: str) -> None:
    from schema_registry.client import AsyncSchemaRegistryClient, schema

    url = new_registry(topic).url
    client = AsyncSchemaRegistryClient(url=url)
    avro_v1 = schema.AvroSchema(json.loads(V1))
    schema_id = await client.register("psrc-value", avro_v1)
    assert schema_id == 1
    assert await client.register("psrc-value", schema.AvroSchema(json.loads(V1))) == 1
    fetched = await client.get_by_id(schema_id)
    assert fetched is not None and fetched.raw_schema == json.loads(V1)
    found = await client.check_version("psrc-value", avro_v1)
    assert found is not None and found.schema_id == 1 and found.version == 1
    latest = await client.get_schema("psrc-value")
    assert latest is not None and latest.version == 1
    assert await client.test_compatibility("psrc-value", schema.AvroSchema(json.loads(V2_BAD))) is False
    assert await client.test_compatibility("psrc-value", schema.AvroSchema(json.loads(V2_OK))) is True
    assert await client.register("psrc-value", schema.AvroSchema(json.loads(V2_OK))) == 2
    assert await client.get_versions("psrc-value") == [1, 2]
    assert await client.update_compatibility("FULL", "psrc-value") is True
    assert await client.get_compatibility("psrc-value") == "FULL"
    assert await client.get_subjects() == ["psrc-value"]


async def test_confluent_kafka_client(new_registry, topic: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    url = new_registry(topic).url

    def scenario() -> None:
        client = SchemaRegistryClient({"url": url})
        schema_id = client.register_schema("ck-value", Schema(V1, "AVRO"))
        assert schema_id == 1
        assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(V1)
        looked_up = client.lookup_schema("ck-value", Schema(V1, "AVRO"))
        assert (looked_up.schema_id, looked_up.version) == (1, 1)
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema("ck-value", Schema(V2_BAD, "AVRO"))
        assert refused.value.http_status_code == 409
        assert client.test_compatibility("ck-value", Schema(V2_OK, "AVRO")) is True
        assert client.register_schema("ck-value", Schema(V2_OK, "AVRO")) == 2
        latest = client.get_latest_version("ck-value")
        assert (latest.version, latest.schema_id) == (2, 2)
        assert client.get_versions("ck-value") == [1, 2]
        assert client.get_subjects() == ["ck-value"]
        assert client.set_compatibility("ck-value", "FORWARD")["compatibility"] == "FORWARD"
        assert client.get_compatibility("ck-value") == "FORWARD"
        assert client.delete_subject("ck-value") == [1, 2]
        with pytest.raises(SchemaRegistryError) as gone:  # a fresh client: the old one caches "latest"
            SchemaRegistryClient({"url": url}).get_latest_version("ck-value")
        assert gone.value.error_code == 40401

    await asyncio.to_thread(scenario)
