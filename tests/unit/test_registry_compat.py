"""Compatibility levels of app.ops.registry.compat, checked via avro's reader/writer checker."""

from __future__ import annotations

import json

import pytest

from app.ops.registry.compat import InvalidSchema, canonicalize, is_compatible, normalize_level


def record(*fields: dict) -> str:
    return json.dumps({"type": "record", "name": "User", "namespace": "cosmic", "fields": list(fields)})


NAME = {"name": "name", "type": "string"}
AGE = {"name": "age", "type": "int"}
AGE_DEFAULT = {"name": "age", "type": "int", "default": 0}
EMAIL_DEFAULT = {"name": "email", "type": ["null", "string"], "default": None}

V1 = record(NAME)


def test_backward_refuses_new_field_without_default() -> None:
    result = is_compatible(new=record(NAME, AGE), existing=[V1], level="BACKWARD")
    assert result.is_compatible is False
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m and "age" in m for m in result.messages)


def test_backward_accepts_new_field_with_default() -> None:
    result = is_compatible(new=record(NAME, AGE_DEFAULT), existing=[V1], level="BACKWARD")
    assert result.is_compatible is True
    assert result.messages == ()


def test_backward_accepts_removing_a_field() -> None:
    assert is_compatible(new=record(NAME), existing=[record(NAME, AGE)], level="BACKWARD").is_compatible


def test_forward_accepts_new_field_without_default() -> None:
    # Old readers simply skip the new field.
    assert is_compatible(new=record(NAME, AGE), existing=[V1], level="FORWARD").is_compatible


def test_forward_refuses_removing_a_field_without_default() -> None:
    result = is_compatible(new=record(NAME), existing=[record(NAME, AGE)], level="FORWARD")
    assert not result.is_compatible
    assert any("age" in m for m in result.messages)


def test_full_needs_both_directions() -> None:
    assert not is_compatible(new=record(NAME, AGE), existing=[V1], level="FULL").is_compatible
    assert not is_compatible(new=record(NAME), existing=[record(NAME, AGE)], level="FULL").is_compatible
    assert is_compatible(new=record(NAME, AGE_DEFAULT), existing=[V1], level="FULL").is_compatible


def test_type_change_is_refused_by_backward_and_forward() -> None:
    old = record({"name": "n", "type": "string"})
    new = record({"name": "n", "type": "int"})
    for level in ("BACKWARD", "FORWARD", "FULL"):
        result = is_compatible(new=new, existing=[old], level=level)
        assert not result.is_compatible, level
        assert any("TYPE_MISMATCH" in m for m in result.messages)


def test_int_to_long_promotion_is_backward_but_not_forward() -> None:
    old = record({"name": "n", "type": "int"})
    new = record({"name": "n", "type": "long"})
    assert is_compatible(new=new, existing=[old], level="BACKWARD").is_compatible
    assert not is_compatible(new=new, existing=[old], level="FORWARD").is_compatible


def test_none_accepts_anything() -> None:
    assert is_compatible(new='"string"', existing=[V1], level="NONE").is_compatible


def test_no_previous_version_is_always_compatible() -> None:
    assert is_compatible(new=V1, existing=[], level="FULL_TRANSITIVE").is_compatible


def test_transitive_checks_every_version_but_plain_only_the_latest() -> None:
    # v1 has no age; v2 adds age with a default; v3 drops the default.
    # v3 reads v2 data (age is present) but cannot read v1 data (age missing, no default).
    v2 = record(NAME, AGE_DEFAULT)
    v3 = record(NAME, AGE)
    assert is_compatible(new=v3, existing=[V1, v2], level="BACKWARD").is_compatible
    transitive = is_compatible(new=v3, existing=[V1, v2], level="BACKWARD_TRANSITIVE")
    assert not transitive.is_compatible
    assert len(transitive.messages) == 1
    assert "position 1 of 2" in transitive.messages[0]


def test_forward_transitive_differs_from_forward() -> None:
    # v1 requires email (no default); v2 gives it a default; v3 drops it.
    # v2 (reader) copes with v3 data, v1 does not.
    email = {"name": "email", "type": "string"}
    v1 = record(NAME, email)
    v2 = record(NAME, {**email, "default": ""})
    v3 = record(NAME)
    assert is_compatible(new=v3, existing=[v1, v2], level="FORWARD").is_compatible
    assert not is_compatible(new=v3, existing=[v1, v2], level="FORWARD_TRANSITIVE").is_compatible
    assert is_compatible(new=v3, existing=[v1, v2], level="FULL").is_compatible
    assert not is_compatible(new=v3, existing=[v1, v2], level="FULL_TRANSITIVE").is_compatible


def test_union_widening_is_backward_compatible_only() -> None:
    old = record({"name": "x", "type": "string"})
    new = record({"name": "x", "type": ["null", "string"], "default": None})
    assert is_compatible(new=new, existing=[old], level="BACKWARD").is_compatible
    assert not is_compatible(new=new, existing=[old], level="FORWARD").is_compatible


def test_levels_are_case_insensitive_and_validated() -> None:
    assert normalize_level(level="full_transitive") == "FULL_TRANSITIVE"
    with pytest.raises(ValueError):
        normalize_level(level="SIDEWAYS")
    with pytest.raises(ValueError):
        is_compatible(new=V1, existing=[V1], level="SIDEWAYS")


def test_invalid_schema_is_reported() -> None:
    with pytest.raises(InvalidSchema):
        is_compatible(new='{"type": "nope"}', existing=[V1], level="BACKWARD")


def test_canonical_form_ignores_whitespace_and_key_order_but_keeps_defaults() -> None:
    a = '{"type": "record", "name": "U", "fields": [{"name": "a", "type": "int", "default": 7}]}'
    b = '{\n  "fields": [ {"default": 7, "type": "int", "name": "a"} ],\n  "name": "U",  "type": "record"\n}'
    assert canonicalize(text=a) == canonicalize(text=b)
    assert json.loads(canonicalize(text=a))["fields"][0]["default"] == 7
    assert canonicalize(text='"string"') == canonicalize(text='{"type": "string"}')
