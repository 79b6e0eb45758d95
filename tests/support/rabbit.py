"""Helpers of the RabbitMQ integration tests: a uuid vhost per test, queue inspection
through the management API, and draining a queue into memory."""

from __future__ import annotations

import base64
import json
import urllib.request
from dataclasses import dataclass
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
        request = urllib.request.Request(f"http://127.0.0.1:15672{path}")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

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


@pytest.fixture
def vhost(stack, uid) -> Vhost:  # noqa: ANN001
    node = StackManager(settings=stack.settings).rabbit
    name = f"cosmic-test-{uid}"
    node.ctl("add_vhost", name)
    node.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield Vhost(node=node, name=name, url=f"amqp://guest:guest@127.0.0.1:5672/{name}")
    try:
        node.ctl("delete_vhost", name)
    except Exception:  # noqa: BLE001 - the node may be restarting after a failed fault test
        node.start()
        node.ctl("delete_vhost", name)
