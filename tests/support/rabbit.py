"""Helpers of the RabbitMQ tests: a uuid vhost per test, queue inspection through the
management API, draining a queue into memory; and, for unit tests, a stand-in for the
worker's RabbitMQ bridge that keeps what would have been published."""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from app.ops.stack.manager import StackManager
from app.ops.stack.rabbitmq import RabbitNode
from support.polling import wait_until


@dataclass
class Vhost:
    node: RabbitNode
    name: str
    url: str

    def management(self, path: str) -> object:
        return management_request("GET", path)

    def queues(self) -> dict[str, dict]:
        """name → the management API's queue object."""
        rows = self.management(f"/api/queues/{quote(self.name, safe='')}")
        return {q["name"]: q for q in rows}  # type: ignore[union-attr]

    def depth(self, queue: str) -> int:
        """Messages in ``queue`` now (rabbitmqctl; the management API's counts lag seconds)."""
        out = self.node.ctl("list_queues", "-p", self.name, "name", "messages", "--no-table-headers", "--quiet")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        raise KeyError(queue)

    def wait_for_queues(self, names: set[str], timeout: float = 60.0) -> dict[str, dict]:
        return wait_until(self.queues, timeout=timeout, what=f"queues {sorted(names)} declared",
                          accept=lambda queues: names <= set(queues),
                          describe=lambda queues: f"missing {names - set(queues or {})}")


def management_request(method: str, path: str, body: dict[str, Any] | None = None) -> object:
    """One request to the local node's management API as guest; the JSON answer, or None."""
    request = urllib.request.Request(f"http://127.0.0.1:15672{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def vhost(stack, uid) -> Vhost:  # noqa: ANN001
    """A fresh vhost, guest allowed everything in it; deleted after the test (through the
    management API: a rabbitmqctl call costs half a second of CLI start-up)."""
    node = StackManager(settings=stack.settings).rabbit
    name = f"cosmic-test-{uid}"
    path = quote(name, safe="")
    management_request("PUT", f"/api/vhosts/{path}", {})
    management_request("PUT", f"/api/permissions/{path}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    yield Vhost(node=node, name=name, url=f"amqp://guest:guest@127.0.0.1:5672/{name}")
    try:
        management_request("DELETE", f"/api/vhosts/{path}")
    except Exception:  # noqa: BLE001 - the node may be restarting after a failed fault test
        node.start()
        node.ctl("delete_vhost", name)


class RecordingBridge:
    """Stands in for ``RabbitBridge.current`` in unit tests: keeps what would have been
    published — messages (``published``: exchange, routing key, body and properties) and the
    event copies the owning agents make (``copies``: JSON forms, in publish order)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, object]] = []
        self.copies: list[dict[str, Any]] = []

    async def publish_message(self, *, exchange_name: str, routing_key: str, body: bytes, properties: Any) -> None:
        self.published.append((exchange_name, routing_key, SimpleNamespace(body=body, properties=properties)))

    async def publish(self, event: dict[str, Any]) -> None:
        self.copies.append(event)

    async def publish_events(self, events: list[dict[str, Any]], *, window: int) -> None:
        self.copies.extend(events)

    def bodies(self) -> list[dict]:
        return [json.loads(m.body) for _, _, m in self.published]
