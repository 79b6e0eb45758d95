"""Fuzzing the Confluent Avro codec (stack-free: an in-memory registry stands in).

* Every valid record of every event family (any values its Avro schema allows) encodes and
  decodes back to an equal event, in Confluent framing with the topic's schema id.
* Arbitrary bytes, arbitrary bodies behind a valid header, and valid encodings mutated (bits
  flipped, truncated, bytes inserted or overwritten, the schema id swapped for another topic's
  or an unknown one) either decode to an event of the topic — which then re-encodes and decodes
  to the same event — or raise the project's EventDecodeError with a known reason. Never any
  other exception.
* Records of the wrong shape (a field of the wrong type, a missing field, an event of another
  topic) are refused by the encoder with EventEncodeError, never another exception; what it
  does write, its decoder reads back (the encoder never writes bytes its decoder refuses).
"""

from __future__ import annotations

import struct

import pytest
from access_support import MemoryRegistryClient, event_types, valid_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.codecs import Codecs
from app.core.errors import EventDecodeError, EventEncodeError
from app.core.models import TOPIC_EVENTS
from app.core.settings import Settings

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROUND_TRIP = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DECODE_REASONS = {"not-framed", "unknown-schema-id", "registry-unavailable", "bad-avro"}
TOPICS = sorted(TOPIC_EVENTS)

# One registry and one set of codecs for the module: every topic's schema registered, so
# headers can carry a real id of this topic, of another topic, or an unknown one.
_CLIENT = MemoryRegistryClient()
_CODECS = Codecs(settings=Settings(topic_prefix="fuzz-"), client=_CLIENT)
_IDS = _CODECS.warm_up()


def _check_decode(topic: str, data: bytes) -> None:
    """The property every decode must have (see the module docstring)."""
    codec = _CODECS.for_topic(topic)
    try:
        event = codec.decode(data)
    except EventDecodeError as exc:
        assert exc.reason in DECODE_REASONS, exc.reason
        return
    assert type(event) in TOPIC_EVENTS[topic], type(event)
    again = codec.encode(event)
    assert codec.decode(again).to_representation() == event.to_representation()


def _records_of(topic: str) -> st.SearchStrategy:
    return st.one_of(*[valid_records(topic, cls.__name__) for cls in TOPIC_EVENTS[topic]])


@pytest.mark.parametrize(("topic", "event_type"), event_types())
@ROUND_TRIP
@given(data=st.data())
def test_valid_records_of_every_family_round_trip(topic: str, event_type: str, data: st.DataObject) -> None:
    event = data.draw(valid_records(topic, event_type), label="event")
    codec = _CODECS.for_topic(topic)
    encoded = codec.encode(event)
    magic, schema_id = struct.unpack(">bI", encoded[:5])
    assert magic == 0 and schema_id == _IDS[topic]
    decoded = codec.decode(encoded)
    assert type(decoded) is type(event)
    assert decoded.to_representation() == event.to_representation()


@pytest.mark.parametrize("topic", TOPICS)
@FUZZ
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_the_decode_error(topic: str, data: bytes) -> None:
    _check_decode(topic, data)


@pytest.mark.parametrize("topic", TOPICS)
@FUZZ
@given(schema_id=st.one_of(st.sampled_from(sorted(_IDS.values())), st.integers(0, 2**32 - 1)),
       body=st.binary(max_size=300))
def test_arbitrary_bodies_behind_a_valid_header_raise_only_the_decode_error(
        topic: str, schema_id: int, body: bytes) -> None:
    _check_decode(topic, struct.pack(">bI", 0, schema_id) + body)


_MUTATIONS = st.sampled_from(["flip", "truncate", "insert", "overwrite", "swap-id", "extend"])


@pytest.mark.parametrize("topic", TOPICS)
@FUZZ
@given(data=st.data())
def test_mutated_valid_encodings_raise_only_the_decode_error(topic: str, data: st.DataObject) -> None:
    event = data.draw(_records_of(topic), label="event")
    encoded = bytearray(_CODECS.for_topic(topic).encode(event))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(_MUTATIONS, label="kind")
        at = data.draw(st.integers(0, len(encoded)), label="at")
        if kind == "flip" and at < len(encoded):
            encoded[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "truncate":
            del encoded[at:]
        elif kind == "insert":
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif kind == "overwrite":
            chunk = data.draw(st.binary(min_size=1, max_size=8), label="chunk")
            encoded[at:at + len(chunk)] = chunk
        elif kind == "swap-id" and len(encoded) >= 5:
            other = data.draw(st.one_of(st.sampled_from(sorted(_IDS.values())), st.integers(0, 2**32 - 1)),
                              label="schema id")
            encoded[1:5] = struct.pack(">I", other)
        elif kind == "extend":
            encoded += data.draw(st.binary(min_size=1, max_size=16), label="trailing")
    _check_decode(topic, bytes(encoded))


def test_a_body_written_with_another_topics_schema_is_a_decode_error() -> None:
    """Deterministic companion of the swap-id mutation: a correct body of another family."""
    for topic in TOPICS:
        for other in TOPICS:
            if other == topic:
                continue
            event = _first_event(other)
            data = _CODECS.for_topic(other).encode(event)
            with pytest.raises(EventDecodeError) as info:
                _CODECS.for_topic(topic).decode(data)
            assert info.value.reason == "bad-avro", (topic, other, info.value)


def _first_event(topic: str):  # noqa: ANN202
    from access_support import EXAMPLES, NOW

    from app.core.validation import parse_event

    cls = TOPIC_EVENTS[topic][0]
    return parse_event(data=EXAMPLES[cls.__name__], now=NOW)


_WRONG_VALUES = st.one_of(st.text(max_size=5), st.integers(), st.floats(), st.booleans(), st.none(),
                          st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                               max_size=2))


@pytest.mark.parametrize("topic", TOPICS)
@FUZZ
@given(data=st.data())
def test_records_of_the_wrong_shape_raise_only_the_encode_error(topic: str, data: st.DataObject) -> None:
    event = data.draw(_records_of(topic), label="event")
    representation = event.to_representation()
    name = data.draw(st.sampled_from(sorted(k for k in representation if k != "__faust")), label="field")
    if data.draw(st.booleans(), label="drop"):
        representation.pop(name)
    else:
        representation[name] = data.draw(_WRONG_VALUES, label="value")
    codec = _CODECS.for_topic(topic)
    try:
        encoded = codec.dumps(representation)
    except EventEncodeError:
        return
    # accepted: it was still a valid record (e.g. a string replaced by a string) — so it decodes
    decoded = codec.decode(encoded)
    assert type(decoded) is type(event)


def test_an_event_of_another_topic_or_a_non_record_is_an_encode_error() -> None:
    for topic in TOPICS:
        for other in TOPICS:
            if other != topic:
                with pytest.raises(EventEncodeError):
                    _CODECS.for_topic(topic).encode(_first_event(other))
        for junk in (None, 1, "text", b"bytes", [1, 2], {"no": "namespace"}):
            with pytest.raises(EventEncodeError):
                _CODECS.for_topic(topic).dumps(junk)
