"""Unit-test fixtures: the app's codecs on an in-memory registry, captured emits and dead letters."""

from __future__ import annotations

import pytest


from support.event_examples import MemoryRegistryClient  # noqa: E402 - shared with the reliability tests


@pytest.fixture
def registry_client() -> MemoryRegistryClient:
    """A fresh in-memory stand-in for the schema registry client."""
    return MemoryRegistryClient()


@pytest.fixture
def memory_registry(monkeypatch):
    """Point every codec of the app at an in-memory registry client."""
    from app.worker.main import codecs

    client = MemoryRegistryClient()
    for codec in codecs.by_topic.values():
        monkeypatch.setattr(codec, "client", client)
        monkeypatch.setattr(codec, "_writer_id", None)
        monkeypatch.setattr(codec, "_writer_plans", {})
    return client


@pytest.fixture
def memory_app_patches() -> None:
    """What a test module changes for its ``memory_app`` tests (override it in the module, e.g.
    to monkeypatch a grace period or a backoff): nothing here."""


@pytest.fixture
def memory_app(memory_registry, captured, memory_app_patches):  # noqa: ANN001
    """The Faust app in-process on the memory store, its agents' emits and dead letters captured
    (the ``captured`` dict is returned). The memory store lives as long as the process: every
    table of the app is emptied first, so a test never sees another one's rows."""
    from app.worker.main import app

    assert app.conf.store.scheme == "memory"
    app.finalize()
    app.flow_control.resume()
    for table in app.tables.values():
        table.data.clear()
    return captured


@pytest.fixture
def captured(monkeypatch):
    """Record what agents emit, dead-letter and copy to RabbitMQ instead of producing to Kafka
    (``emitted``, ``dead``, ``copied``)."""
    import app.worker.streams
    from app.worker.rabbit_bridge import RabbitBridge
    from support.rabbit import RecordingBridge

    sent: dict[str, list] = {"emitted": [], "dead": []}

    async def fake_emit(*events):  # noqa: ANN002
        sent["emitted"].extend(events)

    async def fake_dead_letter(*, origin, reason, error, attempts):  # noqa: ANN001
        sent["dead"].append((origin, reason, attempts))

    monkeypatch.setattr(app.worker.streams, "emit", fake_emit)
    monkeypatch.setattr(app.worker.streams, "dead_letter", fake_dead_letter)
    # The RabbitMQ copies the owning agents make (and any other publish) are kept too.
    bridge = RecordingBridge()
    monkeypatch.setattr(RabbitBridge, "current", bridge)
    sent["copied"] = bridge.copies
    return sent
