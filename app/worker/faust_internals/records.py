"""Faust records on the codec's hot path, without Faust's per-field machinery.

Both read a record class's field descriptors (``_options.descriptors``, ``_options.defaults``)
and write an instance's ``__dict__`` and ``__evaluated_fields__`` directly: what Faust's
generated ``__init__`` does for a record built from already-typed values, written against
faust-streaming 0.15.3 (:data:`app.worker.faust_internals.PINNED`). ``tests/unit/test_codec.py``
checks that they give the bytes and the events Faust's own paths give.

* :func:`record_fields` — a record's fields as fastavro writes them (an emitted event is
  encoded once per event).
* :func:`build_record` — a record from the dict fastavro decoded (every consumed event).
"""

from __future__ import annotations

from typing import Any

import faust


_RECORD_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def record_fields(record: faust.Record) -> dict[str, Any]:
    """A record's fields as fastavro writes them (nested records as dicts), read straight from
    the record: what ``clean_payload(to_representation())`` gives, without its walk over
    every value (an emitted event is encoded on the hot path)."""
    plan = _RECORD_FIELDS.get(type(record))
    if plan is None:
        plan = _RECORD_FIELDS[type(record)] = tuple(
            (name, isinstance(field.type, type) and issubclass(field.type, faust.Record))
            for name, field in record._options.descriptors.items()
        )
    out: dict[str, Any] = {}
    for name, nested in plan:
        value = getattr(record, name)
        out[name] = record_fields(value) if nested and isinstance(value, faust.Record) else value
    return out


_BUILD_PLANS: dict[type, tuple[tuple[str, Any, Any], ...]] = {}


def build_record(cls: type[faust.Record], data: dict[str, Any]) -> Any:
    """``cls.from_data(data)`` for a dict fastavro decoded with our schema, without Faust's
    per-field coercion: fastavro already returns each field as its Python type (str, int,
    float, bool, an aware datetime for timestamp-millis, dicts for maps), so only nested
    records are built and missing optional fields take their defaults. About a third of the
    cost of ``from_data``; ``tests/unit/test_codec.py`` checks that both build equal events."""
    plan = _BUILD_PLANS.get(cls)
    if plan is None:
        options = cls._options
        plan = _BUILD_PLANS[cls] = tuple(
            (name, field.type if isinstance(field.type, type) and issubclass(field.type, faust.Record) else None,
             options.defaults.get(name))
            for name, field in options.descriptors.items()
        )
    obj = cls.__new__(cls)
    obj.__evaluated_fields__ = set()
    values = obj.__dict__
    for name, nested, default in plan:
        value = data.get(name)
        if value is None:
            value = default
        elif nested is not None and isinstance(value, dict):
            value = build_record(nested, value)
        values[name] = value
    return obj
