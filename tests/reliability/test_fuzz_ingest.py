"""Fuzzing the ingest validation (``app.core.validation``: what ``POST /api/events``, ``cosmic send``
and the publisher run on untrusted JSON), stack-free.

Valid events of every type are mutated — fields dropped, unknown fields added (top level and
nested), values replaced by JSON of any type (NaN, Infinity, huge and negative numbers, huge
strings, any Unicode including lone surrogates, nested arrays and objects), bad UUIDs and
timestamps — and each result must be either

* a parsed event that really fits its topic's Avro schema: the codec encodes it and decodes it
  back to the same JSON, and its JSON parses again to the same event; or
* an ``EventValidationError`` whose ``field`` names the mutated field (or a field inside it),
  with a reason, that serializes as the 400 body.

Never another exception. Batches report the first bad item's index; arbitrary JSON documents
are refused with the validation error too.
"""

from __future__ import annotations

import json

import pytest
from access_support import (
    EVENT_TYPES,
    EXAMPLES,
    HOSTILE_TEXT,
    JSON_VALUES,
    NOW,
    MemoryRegistryClient,
    example,
    mutated_events,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from app.core.codecs import Codecs
from app.core.errors import EventValidationError
from app.core.settings import Settings
from app.core.validation import MAX_BATCH_SIZE, event_to_json, parse_event, parse_events

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: A field whose value is checked against another's: an error may name the partner.
PARTNERS = {("previous_status", "new_status")}

_CODECS = Codecs(settings=Settings(topic_prefix="fuzz-"), client=MemoryRegistryClient())


def _check_accepted(event) -> None:  # noqa: ANN001
    """An accepted event fits its Avro schema and survives JSON and Avro round trips."""
    as_json = event_to_json(event)
    codec = _CODECS.for_event(event)
    decoded = codec.decode(codec.encode(event))
    assert event_to_json(decoded) == as_json
    assert event_to_json(parse_event(data=json.loads(json.dumps(as_json)), now=NOW)) == as_json


def _check_refusal(error: EventValidationError) -> dict:
    body = error.to_dict()
    assert body["error"] == "invalid event" and isinstance(body["field"], str)
    assert isinstance(body["reason"], str) and body["reason"]
    json.dumps(body)  # the 400 body serializes (lone surrogates are escaped)
    return body


@FUZZ
@given(case=mutated_events())
def test_mutated_events_are_parsed_into_encodable_events_or_refused_naming_the_field(case) -> None:  # noqa: ANN001
    data, path, kind = case
    original_type = EXAMPLES.get(str(data.get("event_type")), {}).get("event_type")
    try:
        parsed = parse_event(data=data, now=NOW)
    except EventValidationError as error:
        tally(f"{kind}: refused")
        _check_refusal(error)
        if kind == "event_type" and original_type is not None:
            return  # swapped for another valid type: any of that type's fields may be named
        assert (error.field == path or error.field.startswith(path + ".")
                or (path, error.field) in PARTNERS), (kind, path, error.field, error.reason)
        return
    tally(f"{kind}: accepted")
    assert kind != "extra", f"unknown field {path!r} was accepted"
    _check_accepted(parsed)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_is_accepted_and_encodable(event_type: str) -> None:
    for envelope in (False, True):
        _check_accepted(parse_event(data=example(event_type, envelope=envelope), now=NOW))


@SMALL
@given(document=JSON_VALUES)
def test_arbitrary_json_documents_are_refused_with_the_validation_error(document) -> None:  # noqa: ANN001
    for parse in (lambda: parse_event(data=document, now=NOW), lambda: parse_events(data=document, now=NOW)):
        try:
            events = parse()
        except EventValidationError as error:
            _check_refusal(error)
            continue
        for event in events if isinstance(events, list) else [events]:
            _check_accepted(event)


@SMALL
@given(items=st.lists(st.one_of(mutated_events(), st.sampled_from(EVENT_TYPES)), min_size=1, max_size=8))
def test_a_batch_names_the_first_bad_item(items: list) -> None:
    batch = []
    for item in items:
        if isinstance(item, str):  # a valid event (server-filled ids: no duplicates)
            batch.append(example(item, envelope=False))
        else:
            data = item[0]
            data.pop("event_id", None)  # ids are fuzzed above; here only the item's position matters
            batch.append(data)
    first_bad = None
    for index, data in enumerate(batch):
        try:
            parse_event(data=data, now=NOW)
        except EventValidationError:
            first_bad = index
            break
    try:
        events = parse_events(data=batch, now=NOW)
    except EventValidationError as error:
        body = _check_refusal(error)
        assert first_bad is not None and body["index"] == first_bad, (first_bad, body)
        return
    assert first_bad is None and len(events) == len(batch)
    for event in events:
        _check_accepted(event)


def test_batch_limits_and_duplicate_ids_are_refused_with_the_index() -> None:
    with pytest.raises(EventValidationError) as empty:
        parse_events(data=[], now=NOW)
    assert empty.value.field == ""
    with pytest.raises(EventValidationError) as too_many:
        parse_events(data=[example("JobQueued", envelope=False)] * (MAX_BATCH_SIZE + 1), now=NOW)
    assert too_many.value.field == "" and "at most" in too_many.value.reason
    twice = [example("JobQueued"), example("JobCancelled"), example("JobQueued")]
    with pytest.raises(EventValidationError) as duplicate:
        parse_events(data=twice, now=NOW)
    assert duplicate.value.to_dict() == {"error": "invalid event", "field": "event_id", "index": 1,
                                         "reason": duplicate.value.reason}


_JSON_TEXTS = st.one_of(HOSTILE_TEXT, JSON_VALUES.map(lambda v: json.dumps(v)),
                        st.integers(900, 20_000).map(lambda n: "[" * n + "]" * n))


@SMALL
@given(field=st.sampled_from(["before", "after"]), text=_JSON_TEXTS)
def test_fields_holding_json_text_accept_only_json_and_never_crash(field: str, text: str) -> None:
    data = {**example("AuditRecord"), field: text}
    try:
        parsed = parse_event(data=data, now=NOW)
    except EventValidationError as error:
        assert _check_refusal(error)["field"] == field
        return
    json.loads(text)  # accepted: it is JSON
    _check_accepted(parsed)
