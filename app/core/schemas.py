"""The Avro schemas in ``avro/``: one file per topic family, each a union of its event records.

Read lazily (on first use), never at import time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from app.core.models import TOPIC_SCHEMA_FILES
from app.core.settings import PROJECT_ROOT

AVRO_DIR = PROJECT_ROOT / "avro"


@functools.cache
def topic_schema(topic: str) -> list[dict[str, Any]]:
    """The value schema of ``topic`` (without prefix): a list (union) of record schemas."""
    path = AVRO_DIR / TOPIC_SCHEMA_FILES[topic]
    return json.loads(Path(path).read_text())


def topic_schema_text(topic: str) -> str:
    """The schema as the canonical-ish JSON text registered in the registry."""
    return json.dumps(topic_schema(topic), separators=(",", ":"), sort_keys=False)


def subject_for(*, topic_name: str) -> str:
    """Confluent's TopicNameStrategy: ``<full topic name>-value``."""
    return f"{topic_name}-value"


@functools.cache
def enum_symbols() -> dict[str, tuple[str, ...]]:
    """Every enum declared in ``avro/``, by simple name (e.g. ``JobStatus``)."""
    found: dict[str, tuple[str, ...]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum":
                found[node["name"]] = tuple(node["symbols"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for topic in TOPIC_SCHEMA_FILES:
        walk(topic_schema(topic))
    return found
