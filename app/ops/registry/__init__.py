"""A Confluent-compatible Avro schema registry backed by a compacted Kafka topic.

Run it with ``python -m app.ops.registry``; embed it with
``create_registry_app(store=SchemaStore(log=KafkaLog(...)))``.
"""

from __future__ import annotations

from app.ops.registry.compat import CompatResult, is_compatible
from app.ops.registry.server import create_registry_app, serve
from app.ops.registry.store import KafkaLog, MemoryLog, RegistryRefusal, SchemaStore

__all__ = [
    "CompatResult",
    "KafkaLog",
    "MemoryLog",
    "RegistryRefusal",
    "SchemaStore",
    "create_registry_app",
    "is_compatible",
    "serve",
]
