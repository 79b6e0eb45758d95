"""Avro schema compatibility, delegated to ``avro.compatibility``.

Confluent's levels map onto reader/writer checks:

* BACKWARD: the new schema (reader) reads data written with the old one.
* FORWARD: an old schema (reader) reads data written with the new one.
* FULL: both directions.
* ``*_TRANSITIVE``: against every previous version instead of only the latest.
* NONE: always compatible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

DEFAULT_LEVEL = "BACKWARD"
LEVELS: tuple[str, ...] = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


class InvalidSchema(ValueError):
    """The text is not a valid Avro schema."""


@dataclass(frozen=True, kw_only=True)
class CompatResult:
    """Outcome of a compatibility check; ``messages`` explain every failure."""

    is_compatible: bool
    messages: tuple[str, ...] = ()


def normalize_level(*, level: str) -> str:
    """Upper-case ``level``; raise ValueError if it is not a Confluent compatibility level."""
    upper = level.strip().upper() if isinstance(level, str) else ""
    if upper not in LEVELS:
        raise ValueError(f"invalid compatibility level {level!r}")
    return upper


def parse_schema(*, text: str) -> avro.schema.Schema:
    """Parse Avro schema JSON text; raise InvalidSchema with the parser's reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("Empty schema")
    try:
        return avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidSchema(str(exc) or type(exc).__name__) from exc


def is_compatible(*, new: str, existing: list[str], level: str) -> CompatResult:
    """Check ``new`` against ``existing`` (oldest first) under ``level``.

    Non-transitive levels look only at the last (latest) entry of ``existing``.
    """
    level = normalize_level(level=level)
    if level == "NONE" or not existing:
        return CompatResult(is_compatible=True)
    targets = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    base = level.removesuffix("_TRANSITIVE")
    new_schema = parse_schema(text=new)
    messages: list[str] = []
    # Newest first, as Confluent reports the most recent conflicts first.
    for index, old_text in reversed(list(enumerate(targets))):
        old_schema = parse_schema(text=old_text)
        label = f"version at position {index + 1} of {len(targets)}" if len(targets) > 1 else "latest version"
        if base in ("BACKWARD", "FULL"):
            messages += _check(
                reader=new_schema,
                writer=old_schema,
                direction="the new schema cannot read data written with",
                label=label,
            )
        if base in ("FORWARD", "FULL"):
            messages += _check(
                reader=old_schema,
                writer=new_schema,
                direction="data written with the new schema cannot be read by",
                label=label,
            )
    return CompatResult(is_compatible=not messages, messages=tuple(messages))


def _check(*, reader: avro.schema.Schema, writer: avro.schema.Schema, direction: str, label: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader=reader, writer=writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ",".join(sorted({i.name.upper() for i in result.incompatibilities})) or "INCOMPATIBLE"
    details = "; ".join(sorted(str(m) for m in result.messages)) or "incompatible"
    where = ",".join(sorted(result.locations))
    return [f"{{errorType:'{kinds}', description:'{direction} the {label} ({details})', location:'{where}'}}"]


def canonicalize(*, text: str) -> str:
    """Return a compact, key-ordered JSON form of the schema (whitespace-insensitive).

    Unlike Avro's Parsing Canonical Form this keeps defaults, docs, aliases,
    logical types and custom properties, so it is safe to hand back to clients.
    """
    parsed = parse_schema(text=text)
    return json.dumps(_ordered(parsed.to_json()), separators=(",", ":"), ensure_ascii=False)


_KEY_ORDER = (
    "type", "name", "namespace", "doc", "aliases", "fields", "symbols", "items",
    "values", "size", "default", "order", "logicalType", "precision", "scale",
)


_FIELD_ORDER = ("name", "type", "doc", "default", "order", "aliases")


def _ordered(node: object, *, is_field: bool = False) -> object:
    if isinstance(node, list):
        return [_ordered(item, is_field=is_field) for item in node]
    if not isinstance(node, dict):
        return node
    order = _FIELD_ORDER if is_field else _KEY_ORDER
    rank = {key: i for i, key in enumerate(order)}
    keys = sorted(node, key=lambda k: (rank.get(k, len(rank)), k))
    out: dict[str, object] = {}
    for k in keys:
        if k == "default" or (k not in rank and is_field):
            out[k] = node[k]  # data and custom properties stay verbatim
        else:
            out[k] = _ordered(node[k], is_field=(k == "fields"))
    return out
